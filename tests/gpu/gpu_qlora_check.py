"""QLoRA on one CUDA GPU, standalone (about 30-60 s): ``PYTHONPATH=. python tests/gpu/gpu_qlora_check.py``.

What it checks, printing each figure:
1. bitsandbytes is importable (if not: says so, exit code 2, nothing else runs);
2. ``launcher``'s SFT recipe trains LoRA on a 4-bit base (method.lora.quantize=4bit: nf4, double quantization,
   bf16 compute): every base Linear is a bitsandbytes Linear4bit holding packed uint8 weights, the adapters
   train in fp32, and the loss falls over 30 steps;
3. the saved adapter reloads onto a freshly quantized base (peft) with the trained model's logits;
4. ``launcher export`` merges the adapter into the unquantized (fp32) base: no quantization_config, fp32
   weights, logits within quantization error of the trained 4-bit model.
The model is a Qwen2-shaped random-init model (hidden 512, 4 layers) saved as a local HF folder, with the
repo's character tokenizer; the data is the embedded tasks set (400 rows).

Exit codes: 0 all checks passed, 1 a check failed (the assertion says which), 2 bitsandbytes or CUDA missing.
tests/methods/test_qlora.py calls ``check`` as its GPU test (skipped without CUDA and bitsandbytes).
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def make_model(folder: Path) -> Path:
    import torch

    from launcher.config.compose import compose_config
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config(["model.config.hidden_size=512", "model.config.intermediate_size=1536",
                          "model.config.num_hidden_layers=4", "model.config.num_attention_heads=8",
                          "model.config.num_key_value_heads=4"])
    tokenizer = load_tokenizer(cfg.model)
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    out = folder / "tiny-qwen2-512"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def check(model_dir: Path, workdir: Path, quantize: str = "4bit") -> dict:
    """Train, reload, export; returns the figures (asserts on failure)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from launcher.engines.distributed import init_distributed
    from launcher.export.hf import ExportArgs, export_run
    from launcher.models.quantize import quantization_config
    from launcher.launch.rundir import make_run_dir, write_run_config
    from launcher.config.compose import compose_config
    from recipes.sft import SFTRecipe

    figures: dict = {"quantize": quantize}
    cfg = compose_config([f"run.output_root={workdir / 'out'}", "model=hf", f"model.name_or_path={model_dir}",
                          "method=lora", f"method.lora.quantize={quantize}", "method.lr=3e-3",
                          "train.max_steps=30", "train.micro_batch_size=8", "train.log_every=1",
                          "train.eval_every=0", "train.warmup_ratio=0", "data.max_samples=400",
                          "train.eval_max_batches=2", "train.exact_match_samples=0"])
    run_dir = make_run_dir(workdir / "out", "qlora")
    write_run_config(run_dir, cfg)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    recipe = SFTRecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    recipe.train()
    figures["train_s"] = round(time.time() - t0, 1)
    figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    model = recipe.model
    kinds = {type(m).__name__ for n, m in model.named_modules() if n.endswith(("q_proj", "down_proj")) and
             not n.endswith(("lora_A", "lora_B"))}
    import bitsandbytes as bnb

    quantized = [m for m in model.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]
    figures["quantized_linears"] = len(quantized)
    figures["base_weight_dtype"] = str(quantized[0].weight.dtype) if quantized else None
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    figures["lora_dtype"] = str(lora[0].dtype)
    figures["lora_trainable"] = all(p.requires_grad for p in lora)
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["kind"] == "train"]
    figures["loss_first"], figures["loss_last"] = round(sum(losses[:5]) / 5, 4), round(sum(losses[-5:]) / 5, 4)
    print(f"layer kinds {sorted(kinds)}", flush=True)
    assert figures["quantized_linears"] == 4 * 7, figures  # q,k,v,o,gate,up,down per layer
    if quantize == "4bit":
        assert figures["base_weight_dtype"] == "torch.uint8", figures
    assert figures["lora_trainable"] and figures["lora_dtype"] == "torch.float32", figures
    assert figures["loss_last"] < figures["loss_first"] - 0.3, figures

    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]], device="cuda")
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        trained = model(input_ids=ids).logits.float()
    recipe.cleanup()
    base = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization_config(quantize),
                                                dtype=torch.bfloat16, device_map={"": 0})
    reloaded = PeftModel.from_pretrained(base, run_dir / "model").eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        again = reloaded(input_ids=ids).logits.float()
    figures["reload_max_abs_diff"] = float((again - trained).abs().max())
    assert figures["reload_max_abs_diff"] < 5e-2, figures

    out = export_run(run_dir, ExportArgs(out=str(workdir / "merged")))
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    figures["export_quantization_config"] = merged.config.to_dict().get("quantization_config")
    figures["export_dtypes"] = sorted({str(p.dtype) for p in merged.parameters()})
    with torch.no_grad():
        full = merged(input_ids=ids.cpu()).logits.float()
    figures["export_vs_4bit_max_abs_diff"] = float((full - trained.cpu()).abs().max())
    figures["export_vs_4bit_logit_scale"] = float(trained.abs().max())
    assert figures["export_quantization_config"] is None and figures["export_dtypes"] == ["torch.float32"], figures
    return figures


def main() -> int:
    import torch
    import transformers
    import peft

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}", flush=True)
    if not torch.cuda.is_available():
        print("NO CUDA: this check needs a CUDA GPU")
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    if importlib.util.find_spec("bitsandbytes") is None:
        print("bitsandbytes is NOT installed: pip install bitsandbytes (or the wheel you carried), then rerun."
              " Nothing was run.")
        return 2
    import bitsandbytes

    print(f"bitsandbytes {bitsandbytes.__version__}", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_model(tmp)
        quantize = sys.argv[1] if len(sys.argv) > 1 else "4bit"
        try:
            figures = check(model_dir, tmp, quantize)
        except AssertionError as exc:
            print(f"FAILED: {exc}")
            return 1
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print(f"QLoRA check passed in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
