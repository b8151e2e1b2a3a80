"""GRPO from a short SFT on 2 CPU cores (README: "Status of the GRPO demo": it does not yet raise held-out exact
match); a demonstration, not a CI test.

1. A short SFT of the default tiny model on the task data (``--sft-steps``, default 600 of the 1,875 of a full
   epoch), so that its held-out exact match is well below 100%.
2. ``method=grpo`` from that model with the exact-match reward: G completions per prompt, scored against the
   dataset's answer column.
Prints the held-out exact match (the Trainer's greedy check on train.exact_match_samples prompts) after SFT and
after GRPO, the held-out reward, the time each stage took, and where loss.png (reward curve) is.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/demo_grpo.py [--sft-run RUN_DIR] [--grpo-steps 60]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def run(recipe_class, root: Path, overrides: list, name: str):
    from tests.recipe_runs import run_recipe

    t0 = time.monotonic()
    _, run_dir, summary = run_recipe(recipe_class, root, overrides, name)
    return run_dir, summary, time.monotonic() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/launcher-grpo-demo", help="where the run dirs go")
    ap.add_argument("--sft-run", help="reuse this SFT run dir instead of training one")
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--grpo-steps", type=int, default=60)
    ap.add_argument("--eval", type=int, default=120, help="held-out prompts for exact match (tasks_eval)")
    ap.add_argument("grpo_overrides", nargs="*", help="more Hydra overrides for the GRPO run")
    args = ap.parse_args(argv)
    root = Path(args.root)

    if args.sft_run:
        sft_dir = Path(args.sft_run)
        sft = json.loads((sft_dir / "summary.json").read_text())
        sft_seconds = float("nan")
    else:
        from recipes.sft import RECIPE as SFT

        sft_dir, sft, sft_seconds = run(SFT, root, [f"train.max_steps={args.sft_steps}",
                                                    f"train.exact_match_samples={args.eval}"], "sft")
    print(f"SFT ({sft_dir}): held-out exact match {100 * sft['exact_match_before']:.1f}% ->"
          f" {100 * sft['exact_match_after']:.1f}% ({sft_seconds:.0f} s)", flush=True)

    from recipes.grpo import RECIPE as GRPO

    overrides = [
        "method=grpo", f"model.name_or_path={sft_dir / 'model'}", f"train.max_steps={args.grpo_steps}",
        "method.lr=2e-4", "train.warmup_ratio=0", "train.lr_scheduler=constant", "train.micro_batch_size=8",
        "method.grpo.num_generations=8", "method.grpo.max_completion_length=8", "method.grpo.eval_prompts=0",
        f"train.exact_match_samples={args.eval}", "train.log_every=1", *args.grpo_overrides,
    ]
    grpo_dir, grpo, grpo_seconds = run(GRPO, root, overrides, "grpo")
    train = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "train"' in line]
    first, last = train[: max(1, len(train) // 5)], train[-max(1, len(train) // 5):]
    mean = lambda rs: sum(r["reward"] for r in rs) / len(rs)  # noqa: E731
    step_s = [r["time/generation"] + r["time/scoring"] + r["time/update"] for r in train]
    print(f"GRPO ({grpo_dir}): held-out exact match {100 * grpo['exact_match_before']:.1f}% ->"
          f" {100 * grpo['exact_match_after']:.1f}% ({args.grpo_steps} steps, {grpo_seconds:.0f} s;"
          f" {sum(step_s) / len(step_s):.2f} s per step)")
    print(f"training reward (mean of the first / last fifth of the steps): {mean(first):.3f} -> {mean(last):.3f}")
    print(f"loss plot with the reward curve: {grpo_dir / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
