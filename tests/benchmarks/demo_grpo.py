"""GRPO from a short SFT on 2 CPU cores (README: "Status of the GRPO demo"); a demonstration, not a CI test.

1. A short SFT of the default tiny model on the task data (``--sft-steps`` of the 1,875 of a full epoch), then
   ``--sft-more-steps`` more from it (lr 5e-4, another shuffle), so that its held-out exact match is well below
   100% but the rules that read the last letter are partly learned (after 600 steps alone no rule is: every
   answer is well formed, and right about as often as a guess; GRPO then has nothing to sharpen).
2. ``method=grpo`` from that model with the exact-match reward: G completions per prompt, scored against the
   dataset's answer column (GRPO_SETTINGS below; more Hydra overrides after the options win).
Prints the held-out exact match (the Trainer's greedy check on the 120 held-out prompts, train.exact_match_samples)
after SFT and before/after GRPO, the same split by task, the mean training reward of every ``--every`` steps, the
time each stage took, and where loss.png (the reward curve beside the loss) is.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/demo_grpo.py [--sft-run RUN_DIR] [--grpo-steps N] [overrides]
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GRPO_SETTINGS = [
    "method=grpo", "method.lr=3e-4", "train.warmup_ratio=0", "train.lr_scheduler=constant",
    "train.micro_batch_size=16", "method.grpo.num_generations=16", "method.grpo.max_completion_length=6",
    "method.grpo.temperature=0.7", "method.grpo.beta=0.04", "method.grpo.eval_prompts=0", "train.log_every=1",
]
"""The demo's GRPO run (``--grpo-steps`` steps); the SFT model and the held-out count are added."""


def run(recipe_class, root: Path, overrides: list, name: str):
    from tests.recipe_runs import run_recipe

    t0 = time.monotonic()
    _, run_dir, summary = run_recipe(recipe_class, root, overrides, name)
    return run_dir, summary, time.monotonic() - t0


def per_task(run_dir: Path, count: int) -> dict:
    """Held-out exact match of the run's saved model by task (the instruction), greedy, as the Trainer checks it."""
    import torch

    from launcher.config.compose import compose_config
    from launcher.data.prompt_rows import build_prompt_datasets
    from launcher.inference.generation import eos_ids
    from launcher.inference.rollout import TransformersEngine
    from launcher.inference.trained import load_trained_model

    model, tokenizer = load_trained_model(run_dir)
    # the held-out rows as GRPO renders them; tasks_eval as the training set too, so the 30,000 rows are not read
    rows = build_prompt_datasets(compose_config(["data=tasks", "data.datasets=[tasks_eval]"]), tokenizer).eval[:count]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    engine = TransformersEngine(model.eval(), pad, eos_ids(model, tokenizer), torch.device("cpu"))
    hits = collections.defaultdict(list)
    for start in range(0, len(rows), 32):
        part = rows[start:start + 32]
        out = engine.generate([r["prompt_ids"] for r in part], 1, 16, greedy=True)
        for r, text in zip(part, tokenizer.batch_decode(out.completions, skip_special_tokens=True)):
            hits[r["row"]["instruction"]].append(text.strip() == r["answer"].strip())
    return {task: (sum(h), len(h)) for task, h in sorted(hits.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/launcher-grpo-demo", help="where the run dirs go")
    ap.add_argument("--sft-run", help="reuse this SFT run dir instead of training one")
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--sft-more-steps", type=int, default=350, help="a second SFT from the first (0: none)")
    ap.add_argument("--grpo-steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=10, help="print the mean training reward of every N steps")
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

        common = [f"train.exact_match_samples={args.eval}"]
        sft_dir, sft, sft_seconds = run(SFT, root, [f"train.max_steps={args.sft_steps}", *common], "sft")
        print(f"SFT ({sft_dir}): held-out exact match {100 * sft['exact_match_after']:.1f}% after"
              f" {args.sft_steps} steps ({sft_seconds:.0f} s)", flush=True)
        if args.sft_more_steps:
            sft_dir, sft, more_seconds = run(SFT, root, [
                f"model.name_or_path={sft_dir / 'model'}", f"train.max_steps={args.sft_more_steps}",
                "method.lr=5e-4", "train.seed=7", *common], "sft_more")
            sft_seconds += more_seconds
    print(f"SFT ({sft_dir}): held-out exact match {100 * sft['exact_match_before']:.1f}% ->"
          f" {100 * sft['exact_match_after']:.1f}% ({sft_seconds:.0f} s)", flush=True)

    from recipes.grpo import RECIPE as GRPO

    overrides = [*GRPO_SETTINGS, f"model.name_or_path={sft_dir / 'model'}", f"train.max_steps={args.grpo_steps}",
                 f"train.exact_match_samples={args.eval}", *args.grpo_overrides]
    print("GRPO overrides (the last of a key wins):", " ".join(overrides), flush=True)
    grpo_dir, grpo, grpo_seconds = run(GRPO, root, overrides, "grpo")
    train = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "train"' in line]
    step_s = [r["time/generation"] + r["time/scoring"] + r["time/update"] for r in train]
    print(f"GRPO ({grpo_dir}): held-out exact match {100 * grpo['exact_match_before']:.1f}% ->"
          f" {100 * grpo['exact_match_after']:.1f}% ({args.eval} prompts; {len(train)} steps, {grpo_seconds:.0f} s"
          f" in all, {sum(step_s) / len(step_s):.2f} s per step)")
    blocks = [train[i:i + args.every] for i in range(0, len(train), args.every)]
    print(f"training reward, mean of each {args.every} steps:",
          " ".join(f"{sum(r['reward'] for r in b) / len(b):.3f}" for b in blocks))
    before, after = per_task(sft_dir, args.eval), per_task(grpo_dir, args.eval)
    for task in before:
        print(f"  {task:28s} {before[task][0]:3d} -> {after[task][0]:3d} of {before[task][1]}")
    print(f"loss plot with the reward curve: {grpo_dir / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
