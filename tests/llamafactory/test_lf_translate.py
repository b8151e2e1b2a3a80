"""launcher train --from-llamafactory: LLaMA-Factory's documented file shapes -> our overrides.

Pure translation tests first (no Hydra), then the CLI with --dry-run (compose + preflight, nothing launched),
then one real two-step training run from a LLaMA-Factory file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_dict
from launcher.config.llamafactory import (
    deepspeed_choice, hydra_value, parallelism_overrides, read_yaml, translate, translate_file,
)
from launcher.errors import ConfigError
from tests.conftest import SHARED_DEMO

REPO_ROOT = Path(__file__).resolve().parents[2]

# examples/train_full/llama3_full_sft.yaml, as LLaMA-Factory documents it (model and data swapped for local ones)
SFT_FULL = """\
### model
model_name_or_path: {model}
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: full
deepspeed: {deepspeed}

### dataset
dataset: tasks
dataset_dir: {data}
template: qwen
cutoff_len: 128
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 1
dataloader_num_workers: 0

### output
output_dir: {out}/saves/tiny/full/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 2
learning_rate: 1.0e-5
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null
"""

# examples/train_lora/qwen3_lora_sft.yaml's shape
LORA = {
    "model_name_or_path": None, "trust_remote_code": True,
    "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_rank": 16, "lora_target": "q_proj,v_proj",
    "lora_dropout": 0.05,
    "dataset": "tasks", "dataset_dir": None, "template": "qwen3_nothink", "cutoff_len": 128, "max_samples": 100,
    "output_dir": None, "logging_steps": 10, "save_steps": 500, "plot_loss": True, "report_to": "none",
    "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
    "val_size": 0.1, "per_device_eval_batch_size": 1, "eval_strategy": "steps", "eval_steps": 500,
}

# examples/train_lora/qwen3_lora_dpo.yaml's shape
DPO = {
    "model_name_or_path": None, "stage": "dpo", "do_train": True, "finetuning_type": "lora", "lora_rank": 8,
    "lora_target": "all", "pref_beta": 0.1, "pref_loss": "sigmoid",
    "dataset": "prefs", "dataset_dir": None, "template": "qwen", "cutoff_len": 128, "max_samples": 100,
    "output_dir": None, "logging_steps": 10, "save_steps": 500, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 5.0e-6,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
}

# examples/deepspeed/ds_z3_config.json (abridged: the keys that decide)
DS_Z3 = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "bf16": {"enabled": "auto"},
         "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                               "stage3_gather_16bit_weights_on_model_save": True}}


def fill(d: dict, model: Path, data: Path, out: Path) -> dict:
    return {**d, "model_name_or_path": str(model), "dataset_dir": str(data), "output_dir": str(out / "saves" / "x")}


def value_of(overrides: list, key: str) -> str:
    hits = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key]
    assert hits, f"{key} not in {overrides}"
    return hits[-1]


# ------------------------------------------------------------------------------------------- pure


def test_sft_full_with_zero3_json(tmp_path, write_lf):
    ds = tmp_path / "ds_z3_config.json"
    ds.write_text(json.dumps(DS_Z3))
    path = write_lf({}, text=SFT_FULL.format(model="/models/tiny", deepspeed=ds, data=REPO_ROOT / "data", out=tmp_path))
    t = translate_file(path, cwd=tmp_path)
    o = t.overrides
    assert o[:2] == ["experiment=llamafactory", "model=hf"]
    assert "method=sft_full" in o and "parallelism=zero3" in o and "data=llamafactory" in o
    assert value_of(o, "model.name_or_path") == "/models/tiny"
    assert value_of(o, "method.lr") == "1e-05"
    assert value_of(o, "train.micro_batch_size") == "1" and value_of(o, "train.grad_accum") == "2"
    assert value_of(o, "train.lr_scheduler") == "cosine" and value_of(o, "model.dtype") == "bfloat16"
    assert value_of(o, "data.datasets") == "[tasks]" and value_of(o, "data.template") == "qwen"
    assert value_of(o, "run.output_root") == str(tmp_path / "saves" / "tiny" / "full")
    assert value_of(o, "run.name") == "sft"
    # the DeepSpeed file's other settings are named, not dropped
    ds_note = [n for n in t.notes if n.startswith("deepspeed:")][0]
    assert "zero_optimization.overlap_comm" in ds_note and "train_batch_size" not in ds_note
    # every no-op key is named in the note, none dropped silently
    built_in = [n for n in t.notes if n.startswith("built in here")][0]
    for key in ("do_train", "plot_loss", "overwrite_output_dir", "overwrite_cache", "ddp_timeout", "save_only_model"):
        assert key in built_in


def test_lora_keys_and_llamafactory_defaults(tmp_path):
    t = translate(fill(LORA, Path("/m/tiny"), REPO_ROOT / "data", tmp_path), cwd=tmp_path)
    o = t.overrides
    assert "method=lora" in o
    assert value_of(o, "method.lora.r") == "16"
    assert value_of(o, "method.lora.alpha") == "32"  # LLaMA-Factory: twice the rank when lora_alpha is unset
    assert value_of(o, "method.lora.dropout") == "0.05"
    assert value_of(o, "method.lora.target_modules") == "[q_proj,v_proj]"
    assert value_of(o, "data.val_size") == "0.1" and value_of(o, "train.eval_every") == "500"
    assert value_of(o, "data.template") == "auto"
    assert any("qwen3_nothink" in n for n in t.notes)
    assert "per_device_eval_batch_size" in " ".join(t.notes)
    # lora_target: all -> all-linear
    t = translate({**fill(LORA, Path("/m"), REPO_ROOT / "data", tmp_path), "lora_target": "all"}, cwd=tmp_path)
    assert value_of(t.overrides, "method.lora.target_modules") == "all-linear"


@pytest.mark.parametrize("report_to, expected", [("none", []), ("wandb", ["logger=wandb"]),
                                                 ("tensorboard", ["logger=tensorboard"]),
                                                 ("wandb,mlflow", ["logger.backends=[wandb,mlflow]"])])
def test_report_to(tmp_path, report_to, expected):
    t = translate({**fill(LORA, Path("/m"), REPO_ROOT / "data", tmp_path), "report_to": report_to}, cwd=tmp_path)
    assert [o for o in t.overrides if o.startswith("logger")] == expected


def test_dpo_keys(tmp_path):
    t = translate({**fill(DPO, Path("/m"), REPO_ROOT / "data", tmp_path), "pref_loss": "orpo", "pref_beta": 0.2},
                  cwd=tmp_path)
    assert "method=dpo_lora" in t.overrides
    assert value_of(t.overrides, "method.dpo.loss_type") == "orpo"
    assert value_of(t.overrides, "method.dpo.beta") == "0.2"
    t = translate({**fill(DPO, Path("/m"), REPO_ROOT / "data", tmp_path), "finetuning_type": "full"}, cwd=tmp_path)
    assert "method=dpo" in t.overrides


# examples/train_lora/llama3_lora_kto.yaml's shape (LLaMA-Factory)
KTO = {
    "model_name_or_path": None, "trust_remote_code": True, "stage": "kto", "do_train": True,
    "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all", "pref_beta": 0.1,
    "dataset": "kto_en_demo", "dataset_dir": None, "template": "llama3", "cutoff_len": 256, "max_samples": 100,
    "overwrite_cache": True, "preprocessing_num_workers": 16, "dataloader_num_workers": 4,
    "output_dir": None, "logging_steps": 10, "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True,
    "save_only_model": False, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 5.0e-6,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
    "ddp_timeout": 180000000,
}

# examples/train_lora/llama3_lora_pretrain.yaml's shape (LLaMA-Factory)
PRETRAIN = {
    "model_name_or_path": None, "trust_remote_code": True, "stage": "pt", "do_train": True,
    "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all",
    "dataset": "c4_demo", "dataset_dir": None, "cutoff_len": 256, "max_samples": 100, "overwrite_cache": True,
    "preprocessing_num_workers": 16, "dataloader_num_workers": 4,
    "output_dir": None, "logging_steps": 10, "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True,
    "save_only_model": False, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
    "ddp_timeout": 180000000,
}


def test_kto_keys(tmp_path):
    base = fill(KTO, Path("/m"), REPO_ROOT / "data", tmp_path)
    t = translate({**base, "pref_beta": 0.2, "kto_chosen_weight": 1.3, "kto_rejected_weight": 0.9}, cwd=tmp_path)
    o = t.overrides
    assert "method=kto_lora" in o and value_of(o, "method.kto.beta") == "0.2"
    assert value_of(o, "method.kto.desirable_weight") == "1.3" and value_of(o, "method.kto.undesirable_weight") == "0.9"
    assert not any(x.startswith("method.dpo.") for x in o)
    assert "method=kto" in translate({**base, "finetuning_type": "full"}, cwd=tmp_path).overrides


def test_pretrain_freeze_loraplus_pissa_and_qlora_keys(tmp_path):
    base = fill(PRETRAIN, Path("/m"), REPO_ROOT / "data", tmp_path)
    t = translate(base, cwd=tmp_path)
    assert "method=pretrain" in t.overrides and "method.finetuning=lora" in t.overrides
    assert value_of(t.overrides, "data.packing") == "true"  # LLaMA-Factory packs stage pt by default
    t = translate({**base, "finetuning_type": "freeze", "freeze_trainable_layers": -3,
                   "freeze_trainable_modules": "mlp,self_attn", "freeze_extra_modules": "embed_tokens"}, cwd=tmp_path)
    o = t.overrides
    assert "method=pretrain" in o and "method.finetuning=freeze" in o
    assert value_of(o, "method.freeze.trainable_layers") == "-3"
    assert value_of(o, "method.freeze.trainable_modules") == "[mlp,self_attn]"
    assert value_of(o, "method.freeze.extra_modules") == "[embed_tokens]"
    assert any("lora_rank" in n and "unused with finetuning_type freeze" in n for n in t.notes)
    sft = fill(LORA, Path("/m"), REPO_ROOT / "data", tmp_path)
    t = translate({**sft, "finetuning_type": "freeze", "freeze_trainable_modules": "all"}, cwd=tmp_path)
    assert "method=freeze" in t.overrides and value_of(t.overrides, "method.freeze.trainable_modules") == "all"
    t = translate({**sft, "loraplus_lr_ratio": 16, "pissa_init": True, "pissa_iter": 8, "pissa_convert": True},
                  cwd=tmp_path)
    assert value_of(t.overrides, "method.lora.plus_lr_ratio") == "16.0"
    assert value_of(t.overrides, "method.lora.init") == "pissa_niter_8"
    t = translate({**sft, "pissa_init": True, "pissa_iter": -1, "pissa_convert": False}, cwd=tmp_path)
    assert value_of(t.overrides, "method.lora.init") == "pissa"
    assert any("pissa_convert: false" in n for n in t.notes)
    t = translate({**sft, "quantization_bit": 4, "quantization_method": "bnb", "double_quantization": True},
                  cwd=tmp_path)
    assert value_of(t.overrides, "method.lora.quantize") == "'4bit'"  # quoted: Hydra would read 4bit oddly


@pytest.mark.parametrize("zero, expected", [
    ({"stage": 0}, ["parallelism=ddp"]),
    ({"stage": 2}, ["parallelism=zero2"]),
    ({"stage": 1}, ["parallelism=zero2", "parallelism.name=zero1", "parallelism.zero_stage=1"]),
    ({"stage": 2, "offload_optimizer": {"device": "cpu"}},
     ["parallelism=zero2", "parallelism.name=zero2_offload", "parallelism.offload=true"]),
    ({"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
     ["parallelism=zero3_offload"]),
    ({"stage": 3, "offload_param": {"device": "none"}}, ["parallelism=zero3"]),
])
def test_deepspeed_json_to_parallelism(zero, expected):
    assert parallelism_overrides(*deepspeed_choice({"zero_optimization": zero}, "ds.json"), "ds.json") == expected


def test_deepspeed_nvme_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="NVMe offload is not supported yet"):
        deepspeed_choice({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}, "ds.json")
    base = fill(DPO, Path("/m"), REPO_ROOT / "data", tmp_path)
    # LLaMA-Factory's stock file name, not present here: its known content, with a note
    t = translate({**base, "deepspeed": "examples/deepspeed/ds_z3_offload_config.json"}, cwd=tmp_path)
    assert "parallelism=zero3_offload" in t.overrides and any("stock" in n for n in t.notes)
    with pytest.raises(ConfigError, match=r"deepspeed: file not found .*my_ds\.json"):
        translate({**base, "deepspeed": "my_ds.json"}, cwd=tmp_path)


@pytest.mark.parametrize("extra, key, words", [
    ({"stage": "ppo", "reward_model": "saves/none"}, "reward_model", "neither the output_dir of a stage: rm run"),
    ({"stage": "dpo", "finetuning_type": "freeze"}, "finetuning_type", "freeze with stage dpo is not supported"),
    ({"quantization_bit": 3}, "quantization_bit", "3 is not supported; use 4 or 8"),
    ({"quantization_bit": 4, "quantization_method": "hqq"}, "quantization_method", "'hqq' is not supported"),
    ({"loraplus_lr_embedding": 1e-6}, "loraplus_lr_embedding", "LoRA+ trains LoRA on embeddings at learning_rate"),
    ({"use_unsloth": True}, "use_unsloth", "not supported: unsloth kernels"),
    ({"report_to": "swanlab"}, "report_to", "'swanlab' is not supported"),
    ({"lr_scheduler_type": "polynomial"}, "lr_scheduler_type", "'polynomial' is not supported"),
    ({"some_new_key": 1}, "some_new_key", "unknown LLaMA-Factory key"),
])
def test_unsupported_key_is_one_line_naming_it(tmp_path, write_lf, extra, key, words):
    base = {k: v for k, v in fill(LORA, Path("/m"), REPO_ROOT / "data", tmp_path).items()}
    path = write_lf({**base, **extra})
    with pytest.raises(ConfigError) as info:
        translate_file(path, cwd=tmp_path)
    lines = str(info.value).splitlines()
    line = [x for x in lines if f": {key}: " in x]
    assert line, lines
    assert words in line[0]
    _, key_lines = read_yaml(path)
    assert line[0].startswith(f"{path}:{key_lines[key]}: {key}: ")  # file and line of the key


def test_every_unsupported_key_is_reported_at_once(tmp_path):
    bad = {**fill(LORA, Path("/m"), REPO_ROOT / "data", tmp_path), "loraplus_lr_embedding": 1e-6,
           "use_unsloth": True, "quantization_bit": 2}
    with pytest.raises(ConfigError) as info:
        translate(bad, cwd=tmp_path)
    text = str(info.value)
    assert all(k in text for k in ("loraplus_lr_embedding", "use_unsloth", "quantization_bit"))
    assert len(text.splitlines()) == 3


@pytest.mark.parametrize("value", ["/a b/c:d", "it's", "true", "1e-4", "12", "null", "a,b", "x=y", "${oops}x",
                                   "plain/path-1.0", "back\\slash", "end\\", "q\\'x"])
def test_hydra_value_round_trips_through_hydra(value):
    # model.name is a free string; Hydra must give back exactly what the file said
    data = compose_dict([f"model.name={hydra_value(value)}"])
    assert data["model"]["name"] == value


# --------------------------------------------------------------------------------------- the CLI


def test_yaml_positional_points_to_from_llamafactory(capsys, write_lf):
    path = write_lf(LORA)
    assert cli_main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"use launcher train --from-llamafactory {path}" in err and len(err.strip().splitlines()) == 1


needs_lf_data = pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason=f"no LLaMA-Factory demo data at {SHARED_DEMO}")


@needs_lf_data
@pytest.mark.parametrize("shape", ["kto", "pretrain"])
def test_dry_run_kto_and_pretrain_from_llamafactory_examples(tmp_path, write_lf, tiny_hf_model, capsys, shape):
    path = write_lf(fill(KTO if shape == "kto" else PRETRAIN, tiny_hf_model, SHARED_DEMO, tmp_path))
    args = ["train", "--from-llamafactory", str(path), "train.max_steps=3", "--dry-run"]
    # the documented KTO file trains one row per device: its KL rows take LF's pairing (tests/kto/test_kto_data.py)
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "preflight passed" in out
    import yaml

    cfg = yaml.safe_load(out.split("# resolved config\n", 1)[1].split("\n# ", 1)[0])
    if shape == "kto":
        assert cfg["method"]["name"] == "kto" and cfg["method"]["finetuning"] == "lora"
        assert cfg["method"]["kto"]["beta"] == 0.1 and cfg["data"]["datasets"][0]["name"] == "kto_en_demo"
    else:
        assert cfg["method"]["name"] == "pretrain" and cfg["data"]["packing"] is True
        assert cfg["data"]["datasets"][0]["name"] == "c4_demo"


@pytest.mark.parametrize("shape", ["sft_full", "lora", "dpo"])
def test_dry_run(tmp_path, write_lf, tiny_hf_model, capsys, shape):
    if shape == "sft_full":
        ds = tmp_path / "ds_z3_config.json"
        ds.write_text(json.dumps(DS_Z3))
        path = write_lf({}, text=SFT_FULL.format(model=tiny_hf_model, deepspeed=ds, data=REPO_ROOT / "data",
                                                 out=tmp_path))
    else:
        path = write_lf(fill(LORA if shape == "lora" else DPO, tiny_hf_model, REPO_ROOT / "data", tmp_path))
    assert cli_main(["train", "--from-llamafactory", str(path), "train.max_steps=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    command = out.split("# equivalent command:\n", 1)[1].splitlines()[0]
    assert command.startswith("launcher train experiment=llamafactory model=hf ")
    assert command.endswith(" train.max_steps=3 --dry-run")  # the user's overrides come last and win
    assert "preflight passed" in out
    resolved = out.split("# resolved config\n", 1)[1]
    import yaml

    cfg = yaml.safe_load(resolved.split("\n# ", 1)[0])
    assert cfg["model"]["name_or_path"] == str(tiny_hf_model)
    assert cfg["train"]["max_steps"] == 3
    if shape == "sft_full":
        assert cfg["parallelism"]["strategy"] == "deepspeed" and cfg["parallelism"]["zero_stage"] == 3
        assert cfg["method"]["lr"] == 1e-5 and cfg["train"]["grad_accum"] == 2
    elif shape == "lora":
        assert cfg["method"]["lora"]["r"] == 16 and cfg["method"]["lora"]["target_modules"] == ["q_proj", "v_proj"]
        assert cfg["train"]["gradient_checkpointing"] is True  # LLaMA-Factory's default
    else:
        assert cfg["method"]["name"] == "dpo" and cfg["method"]["finetuning"] == "lora"
        assert cfg["method"]["dpo"]["beta"] == 0.1 and cfg["method"]["lr"] == 5e-6


def test_sweep_dry_run(tmp_path, write_lf, tiny_hf_model, capsys):
    path = write_lf(fill(LORA, tiny_hf_model, REPO_ROOT / "data", tmp_path))
    assert cli_main(["train", "-m", "--from-llamafactory", str(path), "method.lr=1e-4,2e-4", "train.max_steps=2",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "launcher train -m experiment=llamafactory" in out
    assert "preflight passed for every point" in out and "method.lr=0.0002" in out


def test_trains_two_steps_from_a_llamafactory_file(tmp_path, write_lf, tiny_hf_model, capsys):
    lf = {**fill(LORA, tiny_hf_model, REPO_ROOT / "data", tmp_path), "lora_target": "all", "max_steps": 2,
          "logging_steps": 1, "val_size": 0.0, "eval_strategy": "no", "bf16": False, "learning_rate": 1e-3}
    lf.pop("eval_steps")
    lf.pop("per_device_eval_batch_size")
    lf["output_dir"] = str(tmp_path / "saves" / "tiny-lora")
    path = write_lf(lf)
    assert cli_main(["train", "--from-llamafactory", str(path)]) == 0
    runs = list((tmp_path / "saves" / "tiny-lora").glob("*/*"))
    assert len(runs) == 1, runs
    run = runs[0]
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r.get("kind") == "train"] == [1, 2]
    assert (run / "model" / "adapter_config.json").is_file()
    # where LF's merge/inference YAMLs look: adapter_name_or_path = output_dir
    from peft import PeftConfig

    output_dir = tmp_path / "saves" / "tiny-lora"
    assert (output_dir / "adapter_config.json").resolve() == (run / "model" / "adapter_config.json").resolve()
    assert PeftConfig.from_pretrained(str(output_dir)).r == 16
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"]["lora"]["r"] == 16 and cfg["train"]["micro_batch_size"] == 2


def test_a_group_given_after_the_file_replaces_what_the_file_set_for_it(tmp_path, write_lf, tiny_hf_model, capsys):
    from launcher.cli import expand_llamafactory
    from launcher.config.compose import config_groups
    from launcher.config.llamafactory import drop_replaced_groups

    kept, notes = drop_replaced_groups(["model=hf", "model.name_or_path=/m", "model.trust_remote_code=true",
                                        "method=lora", "method.lora.r=16", "data.cutoff_len=128"],
                                       ["model=tiny_qwen2", "method.lora.r=8"], config_groups())
    assert kept == ["method=lora", "method.lora.r=16", "data.cutoff_len=128"]
    assert len(notes) == 1 and "model.name_or_path=/m" in notes[0]

    path = write_lf(fill(LORA, tiny_hf_model, REPO_ROOT / "data", tmp_path))
    expanded = expand_llamafactory(["--from-llamafactory", str(path), "model=tiny_qwen2"])
    assert not any(o.startswith("model.") for o in expanded) and expanded[-1] == "model=tiny_qwen2"
    assert "replaces what the file set" in capsys.readouterr().err
    from launcher.config.compose import compose_config

    assert compose_config(expanded, check=False).model.name_or_path is None  # tiny_qwen2's, not the file's


def test_final_model_is_linked_where_llamafactorys_follow_up_yamls_look(tmp_path):
    from launcher.training.model_links import link_final_model

    out = tmp_path / "saves" / "sft"
    first = out / "2026-12-07" / "06-00-00" / "model"
    second = out / "2026-12-07" / "07-00-00" / "model"
    for model, files in ((first, ["adapter_config.json", "adapter_model.safetensors"]), (second, ["config.json"])):
        model.mkdir(parents=True)
        for name in files:
            (model / name).write_text(f"{model.parent.name}/{name}")
    assert link_final_model(first, out) == []
    assert (out / "adapter_config.json").read_text() == "06-00-00/adapter_config.json"
    (out / "README.md").write_text("mine")
    (second / "README.md").write_text("the model card")
    skipped = link_final_model(second, out)  # the earlier run's links go; the user's file stays
    assert len(skipped) == 1 and "README.md" in skipped[0] and (out / "README.md").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir() if p.is_symlink()) == ["config.json"]
    assert not (out / "config.json").readlink().is_absolute()


# LLaMA-Factory 0.9.5's examples/train_lora/qwen3_lora_kto.yaml, key for key
QWEN3_KTO = {
    "model_name_or_path": "Qwen/Qwen3-4B-Instruct-2507", "trust_remote_code": True,
    "stage": "kto", "do_train": True, "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all", "pref_beta": 0.1,
    "dataset": "kto_en_demo", "template": "qwen3_nothink", "cutoff_len": 2048, "max_samples": 1000,
    "preprocessing_num_workers": 16, "dataloader_num_workers": 4,
    "output_dir": "saves/qwen3-4b/lora/kto", "logging_steps": 10, "save_steps": 500, "plot_loss": True,
    "overwrite_output_dir": True, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 5.0e-6,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True, "ddp_timeout": 180000000,
}


@needs_lf_data
def test_llamafactorys_kto_example_trains_as_written(tmp_path, write_lf, tiny_hf_model):
    """qwen3_lora_kto.yaml (one row per device, 8 accumulated) with only the model, the paths and the length of
    the run changed: a tiny local model, 2 steps."""
    lf = {**fill(QWEN3_KTO, tiny_hf_model, SHARED_DEMO, tmp_path), "max_steps": 2, "logging_steps": 1,
          "bf16": False}
    assert lf["per_device_train_batch_size"] == 1 and lf["gradient_accumulation_steps"] == 8
    path = write_lf(lf)
    assert cli_main(["train", "--from-llamafactory", str(path), "data.max_samples=40", "method.kto.probe_rows=2"]) == 0
    run = next(p for p in (tmp_path / "saves" / "x").glob("*/*") if p.is_dir())
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in steps if r.get("kind") == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(math.isfinite(r["loss"]) and "kl" in r for r in train)
