"""QLoRA (method.lora.quantize=4bit|8bit): refused in one line where bitsandbytes cannot run (no CUDA GPU: this
machine), at the dry run and again where the model is built; combinations that cannot work are config errors;
the export of a QLoRA run merges the adapter into the unquantized base. On a CUDA machine with bitsandbytes,
a few steps train and the saved adapter reloads (the GPU test; skipped here). tests/gpu/gpu_qlora_check.py is
the same check as a standalone script with printed figures."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError

CUDA = torch.cuda.is_available()
BNB = importlib.util.find_spec("bitsandbytes") is not None


def qlora(model_dir, *extra):
    return ["model=hf", f"model.name_or_path={model_dir}", "method=lora", "method.lora.quantize=4bit", *extra]


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU: QLoRA is not refused here")
def test_dry_run_on_cpu_refuses_qlora_in_one_line(tmp_path, tiny_hf_model, capsys):
    from launcher.cli import main

    code = main(["train", "--dry-run", f"run.output_root={tmp_path}", *qlora(tiny_hf_model)])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if "method.lora.quantize" in l]
    assert code != 0 and len(lines) == 1, err
    assert ("method.lora.quantize=4bit: QLoRA's bitsandbytes kernels need a CUDA GPU and this run has none (this"
            " machine has no CUDA GPU); drop method.lora.quantize") in lines[0]


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")
def test_building_a_quantized_base_on_cpu_is_the_same_error(tiny_hf_model):
    from launcher.models.quantize import build_quantized_base

    cfg = compose_config(qlora(tiny_hf_model))
    with pytest.raises(ConfigError, match="QLoRA's bitsandbytes kernels need a CUDA GPU .*this rank runs on cpu"):
        build_quantized_base(cfg, "sdpa", torch.device("cpu"))


@pytest.mark.parametrize("overrides,match", [
    (["method=lora", "method.lora.quantize=4bit"], "model=hf model.name_or_path"),
    (["method=sft_full", "method.lora.quantize=4bit"], "needs method.finetuning=lora"),
    (["method=lora", "method.lora.quantize=2bit"], "method.lora.quantize: '2bit' is not one of 4bit, 8bit"),
])
def test_qlora_combinations_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        compose_config(overrides)


def test_qlora_with_zero3_or_pissa_is_refused(tiny_hf_model):
    with pytest.raises(ConfigError, match="not sharded by parallelism=zero3"):
        compose_config(qlora(tiny_hf_model, "parallelism=zero3"))
    with pytest.raises(ConfigError, match="method.lora.init: pissa decomposes full-precision weights"):
        compose_config(qlora(tiny_hf_model, "method.lora.init=pissa"))


def test_export_of_a_qlora_run_merges_into_the_unquantized_base(tmp_path, tiny_hf_model):
    """A QLoRA run's adapter belongs to the full-precision base: export loads that base (never quantized) and
    merges. The adapter here is trained by plain LoRA on CPU; the run's config then says quantize=4bit, as a
    QLoRA run's does."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from launcher.export.hf import ExportArgs, export_run
    from tests.test_train import run_sft

    recipe, run_dir, _ = run_sft(tmp_path / "out", ["model=hf", f"model.name_or_path={tiny_hf_model}",
                                                       "method=lora", "method.lr=5e-3", "train.max_steps=5"])
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("quantize: null", "quantize: 4bit"))
    out = export_run(run_dir, ExportArgs(out=str(tmp_path / "merged")))
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.config.to_dict().get("quantization_config") is None
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_hf_model), run_dir / "model")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(ids).logits, expected.eval()(ids).logits, rtol=0, atol=1e-5)
    assert json.loads((out / "export_info.json").read_text())


@pytest.mark.skipif(not (CUDA and BNB), reason="needs a CUDA GPU and bitsandbytes")
def test_qlora_trains_on_gpu_and_the_adapter_reloads(tmp_path, tiny_hf_model):
    from tests.gpu.gpu_qlora_check import check

    figures = check(tiny_hf_model, tmp_path)
    assert figures["loss_last"] < figures["loss_first"]
    assert figures["reload_max_abs_diff"] < 5e-2


def test_memory_estimate_counts_the_quantized_base():
    """The preflight's GPU memory check must not refuse a QLoRA run for the full-precision base it never holds."""
    from launcher.checks.memory_estimate import ModelShape, estimate_memory_per_gpu

    shape = ModelShape(vocab=152064, hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, tied=False)
    common = ["model=hf", "model.name_or_path=/models/qwen2.5-7b", "method=lora", "cluster.gpus_per_node=1",
              "model.dtype=bfloat16"]
    bf16 = estimate_memory_per_gpu(compose_config(common), shape)
    nf4 = estimate_memory_per_gpu(compose_config([*common, "method.lora.quantize=4bit"]), shape)
    print(f"\n7B-shaped LoRA weights: bf16 base {bf16.weights_gb:.1f} GB, nf4 base {nf4.weights_gb:.1f} GB")
    assert nf4.weights_gb < bf16.weights_gb / 3.5
