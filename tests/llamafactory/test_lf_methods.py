"""--from-llamafactory for the method keys: finetuning_type oft (oft_*), use_llama_pro, use_dft_loss /
use_asft_loss (asft_alpha) / use_eaft_loss (eaft_alpha), double_quantization, use_reentrant_gc and
gradient_checkpointing_kwargs. The files are LLaMA-Factory's examples/extras/{oft,llama_pro,dft,asft,eaft} (Apache-2.0,
hiyouga/LLaMA-Factory, main of August 2026) with the model and data swapped for local ones; each translates as
checked here and passes the dry run with the tiny model."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cli import main as cli_main
from launcher.config.llamafactory import translate
from tests.conftest import SHARED_DEMO

needs_lf_data = pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason=f"no LLaMA-Factory demo data at {SHARED_DEMO}")

COMMON = {"stage": "sft", "do_train": True, "dataset": "alpaca_en_demo", "template": "qwen", "cutoff_len": 2048,
          "max_samples": 1000, "overwrite_cache": True, "preprocessing_num_workers": 16, "dataloader_num_workers": 4,
          "logging_steps": 10, "save_steps": 500, "plot_loss": True, "overwrite_output_dir": True,
          "save_only_model": False, "report_to": "none", "per_device_train_batch_size": 1,
          "gradient_accumulation_steps": 8, "learning_rate": 1.0e-4, "num_train_epochs": 3.0,
          "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True, "ddp_timeout": 180000000}
EXAMPLES = {
    # examples/extras/oft/llama3_oft_sft.yaml
    "oft": {"finetuning_type": "oft", "oft_block_size": 32, "oft_target": "all", "resume_from_checkpoint": None},
    # examples/extras/llama_pro/llama3_freeze_sft.yaml (the model: scripts/llama_pro.py's expanded one)
    "llama_pro": {"finetuning_type": "freeze", "freeze_trainable_layers": 2, "freeze_trainable_modules": "all",
                  "use_llama_pro": True},
    # examples/extras/dft/qwen2_full_sft.yaml
    "dft": {"finetuning_type": "full", "use_dft_loss": True},
    # examples/extras/asft/qwen2_full_asft.yaml (its deepspeed: ds_z0_config.json is DDP)
    "asft": {"finetuning_type": "full", "use_asft_loss": True, "asft_alpha": 0.05},
    # examples/extras/eaft/qwen25_05b_eaft_full.yaml
    "eaft": {"finetuning_type": "full", "use_eaft_loss": True, "logging_steps": 1},
}
EXPECTED = {
    "oft": {"method": "oft", "method.oft.block_size": "32", "method.oft.target_modules": "all-linear"},
    "llama_pro": {"method": "freeze", "method.freeze.llama_pro": "true", "method.freeze.trainable_layers": "2"},
    "dft": {"method": "sft_full", "method.token_loss.name": "dft"},
    "asft": {"method": "sft_full", "method.token_loss.name": "asft", "method.token_loss.asft_alpha": "0.05"},
    "eaft": {"method": "sft_full", "method.token_loss.name": "eaft"},
}


def lf_file(model, out: Path, name: str, **extra) -> dict:
    return {"model_name_or_path": str(model), "trust_remote_code": True, **COMMON, **EXAMPLES[name],
            "dataset_dir": str(SHARED_DEMO), "output_dir": str(out / "saves" / name), **extra}


def values(overrides: list) -> dict:
    return dict(o.split("=", 1) for o in overrides)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_translates(tmp_path, name):
    got = values(translate(lf_file("/m", tmp_path, name), cwd=tmp_path).overrides)
    for key, value in EXPECTED[name].items():
        assert got.get(key) == value, (key, got)


def test_method_keys_and_their_notes(tmp_path):
    t = translate(lf_file("/m", tmp_path, "oft", oft_rank=4, oft_block_size=0, module_dropout=0.1,
                          additional_target="embed_tokens", oft_target="q_proj,v_proj"), cwd=tmp_path)
    v = values(t.overrides)
    assert v["method.oft.r"] == "4" and v["method.oft.block_size"] == "0" and v["method.oft.module_dropout"] == "0.1"
    assert v["method.oft.modules_to_save"] == "[embed_tokens]" and v["method.oft.target_modules"] == "[q_proj,v_proj]"
    assert not any("additional_target" in n for n in t.notes)
    with pytest.raises(Exception, match="quantization_bit: quantized OFT"):
        translate(lf_file("/m", tmp_path, "oft", quantization_bit=4), cwd=tmp_path)
    with pytest.raises(Exception, match="use_llama_pro: with finetuning_type lora is not supported"):
        translate(lf_file("/m", tmp_path, "oft", finetuning_type="lora", use_llama_pro=True), cwd=tmp_path)
    # LLaMA-Factory's precedence: dft, then eaft, then asft
    t = translate(lf_file("/m", tmp_path, "dft", use_asft_loss=True, asft_alpha=0.2), cwd=tmp_path)
    assert values(t.overrides)["method.token_loss.name"] == "dft"
    assert any("uses the first of dft, eaft, asft" in n for n in t.notes)
    assert any("asft_alpha: unused with the dft loss" in n for n in t.notes)
    t = translate(lf_file("/m", tmp_path, "eaft", eaft_alpha=0.5), cwd=tmp_path)
    assert values(t.overrides)["method.token_loss.eaft_alpha"] == "0.5"
    t = translate({**lf_file("/m", tmp_path, "dft"), "stage": "dpo", "finetuning_type": "lora"}, cwd=tmp_path)
    assert "method.token_loss.name" not in values(t.overrides)
    assert any("use_dft_loss: unused with stage dpo" in n for n in t.notes)
    # QLoRA without double quantization; the checkpointing options
    lora = {**lf_file("/m", tmp_path, "dft"), "finetuning_type": "lora", "quantization_bit": 4,
            "double_quantization": False, "use_reentrant_gc": False,
            "gradient_checkpointing_kwargs": {"preserve_rng_state": False}}
    v = values(translate(lora, cwd=tmp_path).overrides)
    assert v["method.lora.quantize"] == "'4bit'" and v["method.lora.double_quantization"] == "false"
    assert v["train.gradient_checkpointing_kwargs"] == "{use_reentrant:false,preserve_rng_state:false}"
    t = translate({**lora, "disable_gradient_checkpointing": True}, cwd=tmp_path)
    assert "train.gradient_checkpointing_kwargs" not in values(t.overrides)
    assert any("unused with disable_gradient_checkpointing: true" in n for n in t.notes)


@needs_lf_data
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_passes_the_dry_run_with_the_tiny_model(tmp_path, tiny_hf_model, capsys, name):
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump(lf_file(tiny_hf_model, tmp_path, name), sort_keys=False))
    code = cli_main(["train", "--from-llamafactory", str(path), "train.max_steps=3", "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0 and "preflight passed" in captured.out, captured.err[-2000:]
    cfg = yaml.safe_load(captured.out.split("# resolved config\n", 1)[1].split("\n# ", 1)[0])
    m = cfg["method"]
    if name == "oft":
        assert m["finetuning"] == "oft" and m["oft"]["block_size"] == 32
    elif name == "llama_pro":
        assert m["finetuning"] == "freeze" and m["freeze"]["llama_pro"] is True
    else:
        assert m["token_loss"]["name"] == name


@needs_lf_data
def test_llama_pro_layer_count_that_does_not_divide_is_refused_at_the_dry_run(tmp_path, tiny_hf_model, capsys):
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump(lf_file(tiny_hf_model, tmp_path, "llama_pro", freeze_trainable_layers=3)))
    assert cli_main(["train", "--from-llamafactory", str(path), "--dry-run"]) != 0
    assert "the model's 4 layers do not divide by 3" in capsys.readouterr().err
