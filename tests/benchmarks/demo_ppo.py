"""PPO that learns, on 2 CPU cores in minutes (README: "PPO in detail"); a demonstration, not a CI test.

1. A task where the reward model is right, built from the task's data (tests/ppo/conftest.py): prompts
   ('Answer.' and a short word) whose answers are digits; a tiny reward model (method=rm) trained on pairs of
   such prompts with a digit answer chosen and a vowel answer rejected. Its held-out pair accuracy is printed.
2. ``method=ppo`` of the tiny random-init policy with that reward model, the settings of
   tests/ppo/test_ppo_train.py's rise, run longer (``--steps``).
Prints the reward model's held-out accuracy, the mean reward of each generation batch, the held-out greedy score
before and after, the mean time split per generation batch, and where loss.png (reward curve) is.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/demo_ppo.py [--steps 96] [--root DIR] [more overrides]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/launcher-ppo-demo", help="where the data and run dirs go (replaced)")
    ap.add_argument("--steps", type=int, default=96, help="PPO optimizer steps (4 per generation batch)")
    ap.add_argument("--rm-steps", type=int, default=6)
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides for the PPO run")
    args = ap.parse_args(argv)

    from launcher.training.metrics import read_metrics
    from recipes.ppo import PPORecipe
    from tests.ppo.conftest import write_digit_prompts
    from tests.ppo.test_ppo_train import LEARN_EPOCHS, learning_overrides
    from tests.recipe_runs import run_recipe
    from tests.rm.helpers import letters_data, run_rm, write_letter_pairs

    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    folder = write_letter_pairs(root / "data")
    write_digit_prompts(folder)
    t0 = time.monotonic()
    _, rm_dir, rm = run_rm(root / "runs", [*letters_data(folder), "method=rm", "method.lr=1e-2",
                                           f"train.max_steps={args.rm_steps}", "train.save_model=true"], "rm")
    print(f"reward model ({rm_dir}): held-out pair accuracy {rm['rewards_before']['eval/rewards/accuracy']:.3f} ->"
          f" {rm['rewards_after']['eval/rewards/accuracy']:.3f}; its mean score of held-out digit answers"
          f" {rm['rewards_after']['eval/rewards/chosen']:.2f}, vowel answers {rm['rewards_after']['eval/rewards/rejected']:.2f}"
          f" ({time.monotonic() - t0:.0f} s)", flush=True)

    t0 = time.monotonic()
    _, run_dir, summary = run_recipe(PPORecipe, root / "runs", [*learning_overrides(folder, rm_dir),
                                                                 f"train.max_steps={args.steps}", *args.overrides],
                                     "ppo")
    seconds = time.monotonic() - t0
    steps = read_metrics(run_dir, "train")
    batches = steps[::LEARN_EPOCHS]
    print(f"PPO ({run_dir}): {len(steps)} steps, {len(batches)} generation batches of 8 prompts, {seconds:.0f} s")
    print("mean reward per generation batch:", " ".join(f"{r['reward']:.2f}" for r in batches))
    first, last = sum(r["reward"] for r in batches[:3]) / 3, sum(r["reward"] for r in batches[-3:]) / 3
    print(f"mean reward, first 3 batches {first:.3f} -> last 3 batches {last:.3f}")
    before, after = summary["held_out_before"], summary["held_out_after"]
    print(f"held-out greedy score (8 prompts): {before['eval/reward']:.3f} -> {after['eval/reward']:.3f}")
    split = {k: sum(r[f"time/{k}"] for r in steps) / len(batches) for k in ("generation", "scoring", "update")}
    print("time per generation batch: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))
    print(f"entropy {steps[0]['entropy']:.2f} -> {steps[-1]['entropy']:.2f}; value loss {steps[0]['value_loss']:.3f}"
          f" -> {steps[-1]['value_loss']:.3f}; loss plot: {run_dir / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
