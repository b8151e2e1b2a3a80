"""A few steps of full and LoRA SFT on the tiny model: the loss falls, and what is saved reloads exactly."""
from __future__ import annotations

import json

import pytest
import torch

from launcher.cli import main as cli_main
from launcher.inference.trained import load_trained_model
from recipes.sft import SFTRecipe
from tests.recipe_runs import run_recipe

FAST = ["train.max_steps=30", "train.micro_batch_size=8", "train.log_every=1", "train.eval_every=0",
        "train.warmup_ratio=0", "data.max_samples=400", "train.eval_max_batches=2",
        "train.exact_match_samples=0"]


def run_sft(output_root, overrides):
    return run_recipe(SFTRecipe, output_root, [*FAST, *overrides])


def probe_batch(recipe):
    return recipe.data.collate(recipe.data.eval[:3])


def losses(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def assert_loss_falls(run_dir):
    values = losses(run_dir)
    assert len(values) == 30
    first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert last < first - 0.3, f"loss did not fall: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("method", ["sft_full", "lora"])
def test_train_then_reload_gives_same_logits(output_root, method):
    lr = "method.lr=5e-3" if method == "lora" else "method.lr=2e-3"
    recipe, run_dir, summary = run_sft(output_root, [f"method={method}", lr])
    assert_loss_falls(run_dir)
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    batch = probe_batch(recipe)
    recipe.model.eval()
    with torch.no_grad():
        expected = recipe.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    reloaded, tokenizer = load_trained_model(run_dir)
    reloaded.eval()
    with torch.no_grad():
        got = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert tokenizer.chat_template and len(tokenizer) == recipe.model.config.vocab_size
    model_dir = run_dir / "model"
    if method == "lora":
        from peft import AutoPeftModelForCausalLM

        assert (model_dir / "adapter_model.safetensors").stat().st_size > 10_000
        assert not (model_dir / "model.safetensors").exists()
        peft_model = AutoPeftModelForCausalLM.from_pretrained(model_dir).eval()
        with torch.no_grad():
            again = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(again, expected, rtol=0, atol=1e-5)
    else:
        from transformers import AutoModelForCausalLM

        assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
        hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        with torch.no_grad():
            again = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(again, expected, rtol=0, atol=1e-5)
    assert (run_dir / "loss.png").stat().st_size > 1000
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])
    for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "trained_tokens_per_s", "trained_tokens_seen"):
        assert key in record


def test_cli_train_writes_run_dir(output_root, capsys):
    code = cli_main(["train", f"run.output_root={output_root}", *FAST, "train.max_steps=3",
                     "train.exact_match_samples=4", "--name", "cli"])
    assert code == 0
    (run_dir,) = list(output_root.glob("cli/*/*"))
    for name in ("config.yaml", "overrides.txt", "code_version.txt", "metrics.jsonl", "summary.json", "loss.png"):
        assert (run_dir / name).exists(), name
    assert "train.max_steps=3" in (run_dir / "overrides.txt").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exact_match_before"] == 0.0 and 0.0 <= summary["exact_match_after"] <= 1.0
    assert len(summary["exact_match_examples"]) == 4
