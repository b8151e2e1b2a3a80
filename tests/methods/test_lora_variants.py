"""LoRA+ (method.lora.plus_lr_ratio) through peft: the B matrices train at ratio x lr, the A matrices at lr;
the loss falls and the saved adapter reloads with the same logits."""
from __future__ import annotations

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.models.build import load_trained_model
from tests.test_train import assert_loss_falls, probe_batch, run_recipe


def test_lora_plus_trains_b_faster_and_reloads(output_root):
    recipe, run_dir, _ = run_recipe(output_root, ["method=lora", "method.lr=2e-3", "method.lora.plus_lr_ratio=16"])
    model = recipe.model
    names = {id(p): n for n, p in model.named_parameters()}
    peak = {}
    for group in recipe.engine.optimizer.param_groups:
        for p in group["params"]:
            peak[names[id(p)]] = group["initial_lr"]
    a = [lr for n, lr in peak.items() if "lora_A" in n]
    b = [lr for n, lr in peak.items() if "lora_B" in n]
    assert a and b and all(lr == pytest.approx(2e-3) for lr in a) and all(lr == pytest.approx(2e-3 * 16) for lr in b)
    assert_loss_falls(run_dir)
    batch = probe_batch(recipe)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    reloaded, _ = load_trained_model(run_dir)
    with torch.no_grad():
        got = reloaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_lora_plus_needs_lora():
    with pytest.raises(ConfigError, match="plus_lr_ratio"):
        compose_config(["method=sft_full", "method.lora.plus_lr_ratio=16"])
