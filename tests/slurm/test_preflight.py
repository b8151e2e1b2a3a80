"""Preflight refuses bad configs before anything is queued; every message names the key and what to do.

One test per kind of problem (13 kinds without a cluster, one more with it), each checking the message.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.errors import PreflightError
from launcher.checks.memory_estimate import ModelShape, estimate_memory_per_gpu
from launcher.checks.preflight import run_preflight

LLAMA_8B = dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, vocab_size=128256,
                num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, model_type="llama")


@pytest.fixture(autouse=True)
def _writable_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative run.output_root lands in a temp dir


def refused(overrides, match):
    """Compose, preflight, and check that the refusal says ``match`` (a regex)."""
    cfg = compose_config(overrides) if isinstance(overrides, list) else overrides
    with pytest.raises(PreflightError, match=match) as info:
        run_preflight(cfg)
    return str(info.value)


def model_dir(tmp_path: Path, chat_template: bool = True, config: dict = LLAMA_8B) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"} if chat_template else {}))
    return folder


def dataset_dir(tmp_path: Path, files: dict, info: dict) -> Path:
    folder = tmp_path / "ds"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def test_default_config_passes():
    assert run_preflight(compose_config(["train.max_steps=3"])) == []


def test_slurm_profiles_pass_without_partition_check():
    for profile in ("slurm_local", "slurm_a100", "slurm_h100"):
        warnings = run_preflight(compose_config([f"cluster={profile}", "cluster.partition=null"]))
        assert isinstance(warnings, list)


# 1
def test_invalid_config_value():
    cfg = compose_config([])
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, lr=-1.0))
    refused(cfg, r"method\.lr: must be > 0, got -1\.0")


# 2
def test_unknown_dataset():
    refused(["data.datasets=[no_such_set]"], r"data\.datasets: unknown dataset 'no_such_set' in .*dataset_info\.json; datasets there: .*tasks")


# 3
def test_missing_dataset_file(tmp_path):
    ds = dataset_dir(tmp_path, {}, {"gone": {"file_name": "gone.json"}})
    refused([f"data.dataset_dir={ds}", "data.datasets=[gone]", "data.eval_datasets=[]"],
            r"data\.datasets: dataset 'gone': file .*gone\.json not found; fix file_name")


# 4
def test_malformed_first_rows(tmp_path):
    ds = dataset_dir(tmp_path, {"bad.jsonl": '{"instruction": "hi", "output": "yo"}\n{not json\n'},
                     {"bad": {"file_name": "bad.jsonl"}})
    refused([f"data.dataset_dir={ds}", "data.datasets=[bad]", "data.eval_datasets=[]"],
            r"data\.datasets: dataset 'bad': .*bad\.jsonl:2: malformed JSON line")


# 5
def test_model_folder_missing(tmp_path):
    refused(["model=hf", f"model.name_or_path={tmp_path}/nowhere"],
            r"model\.name_or_path: folder .*nowhere does not exist; point it at a HF model folder")


# 6
def test_tokenizer_without_chat_template(tmp_path):
    folder = model_dir(tmp_path, chat_template=False)
    msg = refused(["model=hf", f"model.name_or_path={folder}"],
                  r"data\.template: tokenizer .*model has no chat template; name one with data\.template=")
    assert "chatml" in msg
    assert run_preflight(compose_config(["model=hf", f"model.name_or_path={folder}", "data.template=chatml"])) == []


# 7
def with_data(cfg, **changes):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def test_unknown_template_name():
    refused(with_data(compose_config([]), template="vicuna"), r"data\.template: 'vicuna' is not one of auto, chatml")


# 8
def test_global_batch_not_divisible_by_world():
    # Composing already refuses it; preflight checks again for configs changed after composing.
    cfg = compose_config(["cluster=slurm_local", "cluster.partition=null", "cluster.nodes=1", "cluster.nproc_per_node=1",
                          "train.micro_batch_size=4", "train.grad_accum=null", "train.global_batch_size=12"])
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, nodes=2))
    refused(cfg, r"train\.global_batch_size: 12 is not divisible by micro_batch_size x world size = 4 x 2 = 8")


# 9
@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_root_not_writable_as_user(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    refused([f"run.output_root={ro}"], r"run\.output_root: .* is not writable")


# 9 (as root: a path under a regular file can never be created)
def test_output_root_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    refused([f"run.output_root={blocker}/outputs"], r"run\.output_root: .*a-file/outputs is not writable .*; point run\.output_root at a writable folder")


# 10
def test_memory_does_not_fit_and_suggests(tmp_path):
    folder = model_dir(tmp_path)
    msg = refused(["model=hf", f"model.name_or_path={folder}", "cluster=slurm_a100", "cluster.partition=null",
                   "cluster.nodes=1"],
                  r"cluster\.gpu_memory_gb: the run needs about \d+ GB per GPU but the GPUs have 80 GB \(8\.03B params")
    assert "try parallelism=zero2" in msg and "optimizer" in msg
    # The suggestion really fits: with ZeRO-3 over 8 GPUs, or LoRA, preflight passes.
    assert run_preflight(compose_config(["model=hf", f"model.name_or_path={folder}", "cluster=slurm_a100",
                                         "cluster.partition=null", "cluster.nodes=1", "method=lora"])) == []


def test_memory_estimate_orders_strategies(tmp_path):
    shape = ModelShape.from_hf_config(LLAMA_8B)
    base = ["cluster=slurm_a100", "cluster.partition=null", "cluster.nodes=1", "train.micro_batch_size=8"]
    ddp = estimate_memory_per_gpu(compose_config(base), shape).total_gb
    zero2 = estimate_memory_per_gpu(compose_config(base + ["parallelism=zero2"]), shape).total_gb
    zero3 = estimate_memory_per_gpu(compose_config(base + ["parallelism=zero3"]), shape).total_gb
    offload = estimate_memory_per_gpu(compose_config(base + ["parallelism=zero3_offload"]), shape).total_gb
    lora = estimate_memory_per_gpu(compose_config(base + ["method=lora"]), shape).total_gb
    assert ddp > zero2 > zero3 > offload
    assert 120 < ddp < 135  # 16 bytes/param x 8.03B = 120 GiB, plus activations
    assert lora < 25


LLAMA3_70B = ["model.arch=llama", "model.name=llama3-70b-shape", "model.tokenizer=builtin:qwen",
              *(f"++model.config.{k}={v}" for k, v in dict(
                  hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                  tie_word_embeddings="false").items())]
H100_8X8 = ["cluster=slurm_h100", "cluster.partition=null", "cluster.nodes=8", "train.gradient_checkpointing=true"]


def test_70b_on_one_gpu_is_refused_with_a_suggestion_that_fits():
    one_gpu = ["cluster=slurm_h100", "cluster.partition=null", "cluster.nodes=1", "cluster.nproc_per_node=1",
               "cluster.gpus_per_node=1"]
    msg = refused([*one_gpu, *LLAMA3_70B], r"cluster\.gpu_memory_gb: the run needs about \d+ GB per GPU .*70\.\d+B params")
    assert "loading: about" in msg  # the whole fp32 model on the one GPU at load is named too
    suggestion = msg.rsplit("try ", 1)[1].split()
    assert suggestion[0] == "parallelism=zero3" and suggestion[-1].startswith("cluster.nodes=")
    assert run_preflight(compose_config([*one_gpu, *LLAMA3_70B, *suggestion])) is not None


def test_70b_on_8x8_h100_loads_under_zero3_and_fsdp_but_not_with_a_copy_per_rank():
    from launcher.checks.memory_estimate import estimate_load_memory
    from launcher.checks.memory import memory_summary

    for strategy in ("zero3", "fsdp"):
        cfg = compose_config([*H100_8X8, *LLAMA3_70B, f"parallelism={strategy}"])
        run_preflight(cfg)  # accepted
        load = estimate_load_memory(cfg, ModelShape.from_hf_config({**LLAMA_8B, "hidden_size": 8192,
                                                                   "intermediate_size": 28672,
                                                                   "num_hidden_layers": 80,
                                                                   "num_attention_heads": 64}))
        assert load.gpu_gb < 10 and load.host_gb_per_node < 100, load
        assert "loading: about" in memory_summary(cfg)
    # DDP: every rank builds the whole fp32 model (282 GB) in host RAM and on its GPU.
    msg = refused([*H100_8X8, *LLAMA3_70B, "parallelism=ddp"], r"cluster\.mem_gb: loading: about \d+ GB of host RAM")
    assert "every rank builds the whole fp32 model" in msg and "try " in msg


# 11
def test_secret_in_cluster_env():
    refused(["cluster=slurm_local", "cluster.partition=null", "+cluster.env.HF_TOKEN=hf_abcdef"],
            r"cluster\.env\.HF_TOKEN: looks like a secret, and secrets are never written to the run dir; remove it"
            r" and export HF_TOKEN in the shell")


# 12
def test_gpu_count_and_processes_disagree():
    refused(["cluster=slurm_a100", "cluster.partition=null", "cluster.nproc_per_node=1"],
            r"cluster\.nproc_per_node: 1 processes on nodes with 8 GPUs; .* set cluster\.nproc_per_node=8")


# 13
def test_signal_not_before_time_limit():
    refused(["cluster=slurm_local", "cluster.partition=null", "cluster.time_min=1", "cluster.signal_delay_s=90"],
            r"cluster\.signal_delay_s: 90 s is not shorter than the time limit \(cluster\.time_min=1 min\)")


# 14
def test_nccl_without_gpus():
    refused(["cluster=slurm_local", "cluster.partition=null", "parallelism.backend=nccl"],
            r"parallelism\.backend: nccl needs GPUs but cluster\.gpus_per_node=0; use parallelism\.backend=gloo")


# 15
def test_reserved_sbatch_option():
    refused(["cluster=slurm_local", "cluster.partition=null", "+cluster.sbatch_extra.gres=gpu:8"],
            r"cluster\.sbatch_extra\.gres: set by the launcher; use cluster\.gpus_per_node instead")


def test_all_problems_reported_at_once():
    msg = refused(["data.datasets=[nope]", "run.output_root=/proc/no/such"], r"2 problems")
    assert "data.datasets: unknown dataset 'nope'" in msg and "run.output_root: /proc/no/such is not writable" in msg


# 16 (needs the real cluster: sinfo lists partitions)
def test_unknown_partition(slurm_cluster):
    refused(["cluster=slurm_local", "cluster.partition=a100-big"],
            r"cluster\.partition: 'a100-big' does not exist on this cluster; partitions: debug")
    assert run_preflight(compose_config(["cluster=slurm_local"])) == []
