"""LoRA+ (method.lora.plus_lr_ratio) through peft: the B matrices train at ratio x lr, the A matrices at lr;
the loss falls and the saved adapter reloads with the same logits."""
from __future__ import annotations

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from tests.recipe_runs import assert_reload_gives_same_logits
from tests.test_train import assert_loss_falls, probe_batch, run_sft


def test_lora_plus_trains_b_faster_and_reloads(output_root):
    recipe, run_dir, _ = run_sft(output_root, ["method=lora", "method.lr=2e-3", "method.lora.plus_lr_ratio=16"])
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
    assert_reload_gives_same_logits(recipe, run_dir, probe_batch(recipe))


def test_lora_plus_needs_lora():
    with pytest.raises(ConfigError, match="plus_lr_ratio"):
        compose_config(["method=sft_full", "method.lora.plus_lr_ratio=16"])


@pytest.mark.parametrize("variant", ["method.lora.init=pissa", "method.lora.init=olora", "method.lora.use_dora=true",
                                     "method.lora.use_rslora=true"])
def test_lora_variant_learns_and_peft_reloads_the_adapter(output_root, variant):
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe, run_dir, _ = run_sft(output_root, ["method=lora", "method.lr=5e-3", variant])
    assert_loss_falls(run_dir)
    batch = probe_batch(recipe)
    model = recipe.model.eval()
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    adapter = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    if "init" in variant:
        # converted back to a plain LoRA adapter of twice the rank, for the unchanged base
        assert adapter["init_lora_weights"] is True and adapter["r"] == 2 * recipe.cfg.method.lora.r
    # peft's own loading: the unchanged base saved beside the run, plus the saved adapter
    base = AutoModelForCausalLM.from_pretrained(run_dir / "base_model")
    reloaded = PeftModel.from_pretrained(base, run_dir / "model").eval()
    with torch.no_grad():
        got = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    print(f"\n[{variant}] max |logit difference| after reload: {(got - expected).abs().max().item():.2e}")


def test_lora_init_is_checked():
    with pytest.raises(ConfigError, match="method.lora.init: 'pisa' is not one of"):
        compose_config(["method=lora", "method.lora.init=pisa"])
    with pytest.raises(ConfigError, match="method.lora.init: pissa is converted .* parallelism=zero3"):
        compose_config(["method=lora", "method.lora.init=pissa", "parallelism=zero3"])
