"""Reward model on pairs the test writes (chosen: digits, rejected: vowels), tiny model: held-out pair accuracy
and margin rise (full and LoRA), and the saved model reloaded with AutoModelForSequenceClassification (plus
PEFT for LoRA) scores the held-out pairs as the run logged them."""
from __future__ import annotations

import math

import pytest
import torch

from launcher.inference.trained import load_trained_model
from tests.recipe_runs import records
from tests.rm.helpers import letters_data, reloaded_scores, run_rm, write_letter_pairs

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin")


@pytest.mark.parametrize("method,lr,steps,extra", [
    ("rm", "1e-2", 6, []),
    ("rm_lora", "3e-3", 10, []),
    ("rm", "1e-2", 6, ["method.finetuning=freeze", "method.freeze.trainable_layers=1"]),
], ids=["full", "lora", "freeze"])
def test_pair_accuracy_rises_and_reload_scores_the_same(output_root, tmp_path, method, lr, steps, extra):
    data = letters_data(write_letter_pairs(tmp_path / "letters"))
    recipe, run_dir, summary = run_rm(output_root, [*data, f"method={method}", f"method.lr={lr}",
                                                    f"train.max_steps={steps}", *extra])
    if extra:  # freeze: the last layer and the new score head train, nothing else
        trainable = {n for n, p in recipe.model.named_parameters() if p.requires_grad}
        assert "score.weight" in trainable and all(n.startswith(("score.", "model.layers.1.")) for n in trainable)
    before, after = summary["rewards_before"], summary["rewards_after"]
    print(f"\n[{method}] held-out pair accuracy {before['eval/rewards/accuracy']:.3f} -> "
          f"{after['eval/rewards/accuracy']:.3f}, margin {before['eval/rewards/margin']:.4f} -> "
          f"{after['eval/rewards/margin']:.4f}; train pairs {before['train_pairs/rewards/accuracy']:.3f} -> "
          f"{after['train_pairs/rewards/accuracy']:.3f}")
    train = records(run_dir, "train")
    assert len(train) == steps and all(k in r and math.isfinite(r[k]) for r in train for k in ("loss", *REWARD_KEYS))
    assert after["eval/rewards/accuracy"] >= 0.9 > before["eval/rewards/accuracy"]
    assert after["eval/rewards/margin"] > before["eval/rewards/margin"] + 0.5

    model_dir = run_dir / "model"
    if method == "rm_lora":
        assert (model_dir / "adapter_config.json").exists() and (run_dir / "base_model").is_dir()
    else:
        assert "ForSequenceClassification" in (model_dir / "config.json").read_text()
    rows = list(recipe.data.eval)
    trained = recipe.trainer.objective.scores(rows, torch.device("cpu"))
    got = reloaded_scores(run_dir, rows, recipe.trainer.objective.collate)
    torch.testing.assert_close(got, trained, rtol=0, atol=1e-5)
    reloaded, _ = load_trained_model(run_dir)  # what launcher's own tools load: the same scorer
    batch = recipe.trainer.objective.collate(rows)
    with torch.no_grad():
        ours = reloaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(ours[:, 0].view(2, -1).T, trained, rtol=0, atol=1e-5)
    # the same numbers the run logged for the held-out pairs after training
    assert got[:, 0].mean().item() == pytest.approx(after["eval/rewards/chosen"], abs=1e-5)
    assert got[:, 1].mean().item() == pytest.approx(after["eval/rewards/rejected"], abs=1e-5)
    assert (got[:, 0] > got[:, 1]).double().mean().item() == pytest.approx(after["eval/rewards/accuracy"])
