"""OFT on 2 CPU ranks (torchrun, gloo): DDP and ZeRO-2 give the same per-step losses, and the adapter ZeRO-2
saves reloads with the logits of DDP's (FSDP and ZeRO-3 are refused at the dry run: tests/methods/test_oft_llama_pro.py)."""
from __future__ import annotations

import torch

from tests.methods.test_methods_parallel import saved_logits, train_losses
from tests.recipe_runs import torchrun_recipe

OVERRIDES = ["method=oft", "method.lr=5e-3", "train.max_steps=3", "train.micro_batch_size=4", "train.log_every=1",
             "train.eval_every=0", "train.warmup_ratio=0", "data.max_samples=48", "train.exact_match_samples=0",
             "logger=none", "data.val_size=4", "train.eval_max_batches=1"]


def test_oft_under_ddp_and_zero2_matches(tmp_path):
    runs = {p: torchrun_recipe("recipes.sft", tmp_path / p, [*OVERRIDES, f"parallelism={p}"], p)
            for p in ("ddp", "zero2")}
    ddp, zero2 = train_losses(runs["ddp"]), train_losses(runs["zero2"])
    assert list(ddp) == [1, 2, 3] and ddp.keys() == zero2.keys()
    for step in ddp:
        assert abs(ddp[step] - zero2[step]) <= 1e-5 * abs(ddp[step]), (step, ddp, zero2)
    assert (runs["zero2"] / "model" / "adapter_config.json").is_file()
    batch = {"input_ids": torch.randint(0, 60, (2, 10), generator=torch.Generator().manual_seed(0))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    torch.testing.assert_close(saved_logits(runs["zero2"], batch), saved_logits(runs["ddp"], batch), rtol=1e-4,
                               atol=1e-5)
