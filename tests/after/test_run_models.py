"""The model sources chat and predict offer: the final model, a checkpoint, and the base (chat --base)."""
from __future__ import annotations

import pytest
import torch

from launcher.errors import LauncherError
from launcher.inference.trained import load_run_model, resolve_checkpoint


def first_logits(model, tokenizer):
    ids = tokenizer(["Add the two numbers.\n43+29"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_base_of_lora_run_is_the_saved_base(lora_run):
    from transformers import AutoModelForCausalLM

    base, tokenizer, _, source = load_run_model(lora_run, base=True)
    assert source == "base model"
    reference = AutoModelForCausalLM.from_pretrained(lora_run / "base_model").eval()
    torch.testing.assert_close(first_logits(base, tokenizer), first_logits(reference, tokenizer), rtol=0, atol=0)
    trained, _, _, _ = load_run_model(lora_run, merge=True)
    assert (first_logits(trained, tokenizer) - first_logits(base, tokenizer)).abs().max() > 1e-3


def test_base_of_full_run_is_rebuilt_from_the_seed(full_run):
    # No base was saved for a random-init full fine-tune; rebuilding twice gives the same weights, and they
    # are not the trained ones.
    a, tokenizer, _, _ = load_run_model(full_run, base=True)
    b, _, _, _ = load_run_model(full_run, base=True)
    torch.testing.assert_close(first_logits(a, tokenizer), first_logits(b, tokenizer), rtol=0, atol=0)
    trained, _, _, _ = load_run_model(full_run)
    assert (first_logits(trained, tokenizer) - first_logits(a, tokenizer)).abs().max() > 1e-4


def test_checkpoint_names_and_errors(lora_run, tmp_path):
    expected = lora_run / "checkpoints" / "step-0000002"
    for name in ("step-2", "2", "step-0000002", str(expected)):
        assert resolve_checkpoint(lora_run, name) == expected
    with pytest.raises(LauncherError, match="complete ones in this run: step-0000002"):
        resolve_checkpoint(lora_run, "step-3")
    with pytest.raises(LauncherError, match="not a run dir"):
        load_run_model(tmp_path)
