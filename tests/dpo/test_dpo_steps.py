"""One optimizer step is the same step however it is split: micro-batches x accumulation x ranks give the
same loss and reward metrics; a run resumed from a checkpoint takes the same steps as one never stopped."""
from __future__ import annotations

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.engines.distributed import init_distributed
from recipes.dpo import DPORecipe
from tests.dpo.helpers import FAST, run_dpo
from tests.recipe_runs import records

KEYS = ("loss", "rewards/accuracy", "rewards/margin", "rewards/chosen", "logps/chosen", "logps/rejected")
COMMON = ["method=dpo", "method.lr=3e-3", "train.max_steps=3", "method.dpo.probe_pairs=8"]


def assert_same_steps(a, b, tol=2e-5):
    # fp32 sums in another order after an lr=3e-3 step: a few ulps, relative to log-probs of size ~20.
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        for key in KEYS:
            assert x[key] == pytest.approx(y[key], abs=tol, rel=5e-6), (x["step"], key, x[key], y[key])


def test_accumulation_and_ranks_give_the_same_step(output_root):
    _, one, _ = run_dpo(output_root, [*COMMON, "train.micro_batch_size=8", "train.grad_accum=1"], name="one")
    _, accum, _ = run_dpo(output_root, [*COMMON, "train.micro_batch_size=4", "train.grad_accum=2"], name="accum")
    assert_same_steps(records(one, "train"), records(accum, "train"))
    rc = cli_main(["train", *FAST, *COMMON, "train.micro_batch_size=4", "train.grad_accum=1", "cluster.nproc_per_node=2",
                   f"run.output_root={output_root}", "--name", "ddp"])
    assert rc == 0
    ddp = next((output_root / "ddp").glob("*/*"))
    assert_same_steps(records(one, "train"), records(ddp, "train"))


def test_resume_takes_the_same_steps(output_root):
    cfg = compose_config([f"run.output_root={output_root}", *FAST, *COMMON, "train.max_steps=4", "train.save_every=2"])
    run_dir = make_run_dir(output_root, "resume")
    write_run_config(run_dir, cfg)
    attempts = []
    for attempt in range(2):  # the second attempt finds the step-2 checkpoint and redoes steps 3 and 4
        recipe = DPORecipe(cfg, run_dir, init_distributed())
        recipe.setup()
        assert recipe.step == (0 if attempt == 0 else 2)
        recipe.train()
        recipe.cleanup()
        attempts.append(records(run_dir, "train"))
    first, steps = attempts
    # The resumed attempt logs steps 3 and 4 once (the first attempt's records of them are replaced) ...
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    # ... with the same values as the first attempt had.
    assert_same_steps(first[2:4], steps[2:4])
