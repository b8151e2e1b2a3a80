"""Issue 20, items 2-4: the preflight refuses, in one line naming the key or file and what to do, what would
otherwise fail on the ranks (or train silently on the wrong thing): data of the wrong kind for the method,
LoRA targets the model lacks, a hub model while offline, damaged safetensors, a run.resume that is not a
checkpoint, more processes or nodes than there are, an engine whose package is missing, columns the run
would misuse; and it says what dtype a CPU run really uses.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.errors import PreflightError
from launcher.checks.preflight import run_preflight
from launcher.checks.resources import gpus_in_gres, local_gpu_count, parse_sinfo, usable_cpus


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def refused(overrides, match):
    cfg = compose_config(overrides, check=False)
    with pytest.raises(PreflightError, match=match) as info:
        run_preflight(cfg)
    return str(info.value)


def dataset_dir(tmp_path: Path, info: dict, files: dict) -> Path:
    folder = tmp_path / "ds"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def with_data(folder: Path, *names: str) -> list:
    return [f"data.dataset_dir={folder}", f"data.datasets=[{','.join(names)}]", "data.eval_datasets=[]"]


ALPACA = [{"instruction": f"say {i}", "input": "", "output": str(i)} for i in range(6)]
PAIRS = [{"instruction": f"say {i}", "input": "", "chosen": str(i), "rejected": "no"} for i in range(6)]


# ------------------------------------------------------------------------------------- method vs data


def test_preference_method_on_answer_data():
    msg = refused(["method=dpo"], r"data\.datasets, data\.eval_datasets: method=dpo needs preference data, but"
                                  r" 'tasks', 'tasks_eval' \(in .*dataset_info\.json\) are not marked ranking: true")
    assert "\n" not in msg and "data=prefs" in msg


def test_answer_method_on_preference_data():
    refused(["data=prefs"], r"method=sft_full trains on one answer per prompt, but 'prefs', 'prefs_eval' .* preference"
                            r" data \(ranking: true\); use method=dpo or method=dpo_lora")
    refused(["data=prefs", "method=lora"], r"method=lora trains on one answer per prompt")
    assert run_preflight(compose_config(["data=prefs", "method=dpo_lora"])) == []


# ------------------------------------------------------------------------------------- LoRA targets


def test_lora_targets_the_model_lacks_are_named_with_the_ones_it_has():
    msg = refused(["method=lora", "method.lora.target_modules=[q_proj,attn_out,mlp]"],
                  r"method\.lora\.target_modules: attn_out, mlp match no LoRA-able \(Linear/Embedding/Conv\) modules"
                  r" of this model; its LoRA-able \(Linear/Embedding/Conv\) modules: down_proj, embed_tokens,"
                  r" gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj$")
    assert "q_proj," in msg  # q_proj exists: only the two others are named as missing
    assert run_preflight(compose_config(["method=lora", "method.lora.target_modules=[q_proj,v_proj]"])) == []
    refused(["method=lora", "method.lora.modules_to_save=[score]"],
            r"method\.lora\.modules_to_save: score match no modules of this model")


# ------------------------------------------------------------------------------------- model files


def tiny_model_dir(tmp_path: Path, name: str = "model") -> Path:
    """A real (tiny) HF model folder: config, safetensors weights, a tokenizer with a chat template."""
    from safetensors.numpy import save_file
    import numpy as np

    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64}))
    # A tokenizer that loads (the preflight resolves the chat template with it, as training will).
    from launcher.models.tokenizers import build_char_tokenizer

    build_char_tokenizer().save_pretrained(folder)
    save_file({"model.embed_tokens.weight": np.zeros((64, 16), dtype=np.float32),
               "lm_head.weight": np.ones((64, 16), dtype=np.float32)}, str(folder / "model.safetensors"))
    return folder


def test_whole_safetensors_pass(tmp_path):
    folder = tiny_model_dir(tmp_path)
    assert run_preflight(compose_config(["model=hf", f"model.name_or_path={folder}"])) == []


def test_safetensors_with_a_garbled_header(tmp_path):
    folder = tiny_model_dir(tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8:20] = b"garbage!!!!!"
    (folder / "model.safetensors").write_bytes(bytes(data))
    refused(["model=hf", f"model.name_or_path={folder}"],
            r"model\.name_or_path: .*model\.safetensors: its header is not valid JSON .*re-download or re-export")


def test_safetensors_cut_short(tmp_path):
    folder = tiny_model_dir(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 100])
    refused(["model=hf", f"model.name_or_path={folder}"],
            r"model\.safetensors: its tensors need 8192 bytes of data but the file holds 8092: the file is cut short")
    (folder / "model.safetensors").write_bytes(data[:5])
    refused(["model=hf", f"model.name_or_path={folder}"], r"5 bytes, shorter than a safetensors header")


def test_sharded_model_missing_a_shard(tmp_path):
    folder = tiny_model_dir(tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    refused(["model=hf", f"model.name_or_path={folder}"],
            r"lacks 1 shard\(s\) that model\.safetensors\.index\.json names \(model-00002-of-00002\.safetensors\)")


def test_hub_id_while_offline_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused(["model=hf", "model.name_or_path=someone/not-cached-model-x"],
            r"model\.name_or_path: 'someone/not-cached-model-x' is not in the local HF cache and the hub cannot be"
            r" reached \(HF_HUB_OFFLINE=1\); download it")


# ------------------------------------------------------------------------------------- resume


def test_resume_must_be_auto_never_or_a_complete_checkpoint(tmp_path):
    refused(["run.resume=latest"], r"run\.resume: 'latest' is not auto, never or a checkpoint path")
    refused([f"run.resume={tmp_path}/gone"], r"run\.resume: .*gone does not exist")
    step = tmp_path / "run" / "checkpoints" / "step-0000010"
    step.mkdir(parents=True)
    (step / "meta.json").write_text(json.dumps({"step": 10, "world_size": 1}))
    refused([f"run.resume={step}"], r"run\.resume: .*step-0000010 is not a complete checkpoint \(no COMPLETE marker\)")
    (step / "COMPLETE").write_text("")
    assert run_preflight(compose_config([f"run.resume={step}"])) == []
    refused([f"run.resume={tmp_path / 'run'}"], r"it looks like a run dir: use .*checkpoints/step-0000010")
    refused([f"run.resume={step}", "cluster.nproc_per_node=2"],
            r"run\.resume: step-0000010 was written with world size 1, this run has 2")


# ------------------------------------------------------------------------------------- resources


def test_more_local_processes_than_cpus():
    if local_gpu_count():
        pytest.skip("this machine has GPUs: the limit is the GPU count")
    cpus = usable_cpus()
    refused([f"cluster.nproc_per_node={cpus + 1}"],
            rf"cluster\.nproc_per_node: {cpus + 1} CPU processes but this machine has {cpus} CPU core\(s\) to use;"
            rf" set cluster.nproc_per_node={cpus} or less")


def test_sinfo_figures_are_read():
    text = "gpu 4 64 512000 gpu:a100:8(S:0-1)\ngpu 2 128 1024000 gpu:a100:8\ncpu 10 32 128000+ (null)\n"
    parts = parse_sinfo(text)
    assert (parts["gpu"].nodes, parts["gpu"].cpus_per_node, parts["gpu"].mem_mb_per_node, parts["gpu"].gpus_per_node) \
        == (6, 128, 1024000, 8)
    assert (parts["cpu"].nodes, parts["cpu"].gpus_per_node) == (10, 0)
    assert gpus_in_gres("gpu:4,shard:2") == 4 and gpus_in_gres("(null)") == 0


def test_partition_node_limit_is_named():
    from launcher.checks.resources import Partition, partition_problems

    cfg = compose_config(["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1"])
    small = Partition("short", nodes=8, cpus_per_node=4, mem_mb_per_node=16000, gpus_per_node=0, max_nodes=1)
    assert partition_problems(cfg, small) == [
        "cluster.nodes: 2 nodes asked (partition 'short' has 8 node(s), at most 1 per job, 4 CPUs and 15.6 GB per"
        " node, 0 GPU(s) per node); lower cluster.nodes"]


def test_more_than_the_partition_has(slurm_cluster):
    msg = refused(["cluster=slurm_local", "cluster.nodes=3"],
                  r"cluster\.nodes: 3 nodes asked \(partition 'debug' has 2 node\(s\), \d+ CPUs and [\d.]+ GB per node,"
                  r" 0 GPU\(s\) per node\); lower cluster\.nodes")
    assert "\n" not in msg
    refused(["cluster=slurm_local", "cluster.mem_gb=100000"], r"cluster\.mem_gb: 100000 GB per node asked")
    refused(["cluster=slurm_local", "cluster.cpus_per_task=512"], r"cluster\.cpus_per_task: 512 CPUs per node asked")
    refused(["cluster=slurm_local", "cluster.gpus_per_node=8", "cluster.nproc_per_node=8"],
            r"cluster\.gpus_per_node: 8 GPUs per node asked")
    assert run_preflight(compose_config(["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1"])) == []


def test_engine_without_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # how Python marks a package as not importable
    refused(["parallelism=zero3"], r"parallelism: parallelism=zero3 needs the deepspeed package, which is not"
                                   r" installed in this environment; install deepspeed")


# ------------------------------------------------------------------------------------- dataset_info, files


def test_broken_entry_the_run_does_not_use_does_not_block(tmp_path):
    folder = dataset_dir(tmp_path, {"good": {"file_name": "a.json"}, "broken": "not-a-mapping",
                                    "weird": {"file_name": "x.json", "formatting": "xml"}}, {"a.json": ALPACA})
    assert run_preflight(compose_config(with_data(folder, "good"))) == []
    refused(with_data(folder, "weird"), r"entry 'weird': formatting 'xml' is not alpaca or sharegpt")


def test_empty_file_says_it_is_empty(tmp_path):
    folder = dataset_dir(tmp_path, {"e": {"file_name": "e.json"}, "l": {"file_name": "e.jsonl"}},
                         {"e.json": "", "e.jsonl": "\n  \n"})
    refused(with_data(folder, "e"), r"e\.json: the file is empty")
    refused(with_data(folder, "l"), r"e\.jsonl: the file is empty")


def test_preference_file_without_ranking_says_so(tmp_path):
    convo = [{"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "yes"},
              "rejected": {"from": "gpt", "value": "no"}}] * 3
    folder = dataset_dir(tmp_path, {"p": {"file_name": "p.json"},
                                    "s": {"file_name": "s.json", "formatting": "sharegpt"}},
                         {"p.json": PAIRS, "s.json": convo})
    for name in ("p", "s"):
        refused(with_data(folder, name), rf"row 0: the row has chosen and rejected answers but dataset '{name}' is not"
                                         r" marked as preference data; add \"ranking\": true to its entry")


def test_wrong_sharegpt_tags_name_the_tags(tmp_path):
    keys = [{"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 2
    roles = [{"conversations": [{"from": "user", "value": "hi"}, {"from": "gpt", "value": "yo"}]}] * 2
    folder = dataset_dir(tmp_path, {"k": {"file_name": "k.json", "formatting": "sharegpt"},
                                    "r": {"file_name": "r.json", "formatting": "sharegpt"}},
                         {"k.json": keys, "r.json": roles})
    refused(with_data(folder, "k"), r"turn 0 has no 'from' key \(the role_tag\); its keys are role, content: set"
                                    r" tags\.role_tag and tags\.content_tag")
    refused(with_data(folder, "r"), r"turn 0 has unknown role 'user', which none of the tags names \(user_tag='human',"
                                    r" assistant_tag='gpt'")


# ------------------------------------------------------------------------------------- no silent surprises


def test_kto_tag_under_sft_is_refused(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bad"}], "label": False}]
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    folder = dataset_dir(tmp_path, {"kto": {"file_name": "k.json", "formatting": "sharegpt", "tags": tags,
                                            "columns": {"messages": "messages", "kto_tag": "label"}}},
                         {"k.json": rows * 3})
    refused(with_data(folder, "kto"), r"data\.datasets: dataset 'kto' maps a kto_tag column \('label': KTO's"
                                      r" desirable/undesirable label\): method=sft_full would train on the undesirable"
                                      r" answers too\. Use method=kto \(or method=kto_lora\)")


def test_images_with_a_text_only_model_are_refused(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "A cat."}],
             "images": ["cat.png"]}]
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    folder = dataset_dir(tmp_path, {"mm": {"file_name": "m.json", "formatting": "sharegpt", "tags": tags,
                                           "columns": {"messages": "messages", "images": "images"}}},
                         {"m.json": rows * 3, "cat.png": "not really a png"})
    refused(with_data(folder, "mm"), r"dataset 'mm' has images \(columns in .*\), but the model \(qwen2\) is text-only:"
                                     r" the <image>/<video>/<audio> placeholders would be trained as plain text")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_on_cpu_says_what_runs(dtype):
    if local_gpu_count():
        pytest.skip("this machine has a GPU")
    warnings = run_preflight(compose_config([f"model.dtype={dtype}"]))
    assert warnings == [f"model.dtype={dtype}: this run has no GPU (this machine has no GPU); on a CPU it trains in"
                        f" float32 (weights and compute), not in {dtype}. Set model.dtype=float32 (or auto) to say"
                        " what it does"]
    slurm = run_preflight(compose_config(["cluster=slurm_local", "cluster.partition=null", f"model.dtype={dtype}"]))
    assert any("cluster.gpus_per_node=0" in w for w in slurm)
