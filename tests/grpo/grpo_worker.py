"""One rank of a GRPO parallelism test (started by torchrun): the GRPO recipe on the run dir's config, with its
completions fixed by the prompts (``FixedCompletions``) instead of sampled, so that one process and two ranks
under any engine train on the same completions and their losses can be compared."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from launcher.inference.rollout import GenerationEngine, Rollout


class FixedCompletions(GenerationEngine):
    """A generation engine whose completions are a function of the prompt's ids alone (lengths 1 .. max, ids in a
    range of ordinary characters), the same on every rank and world size."""

    name = "fixed"

    def __init__(self, low: int, high: int):
        self.low, self.span = low, high - low

    def generate(self, prompts, n, max_new_tokens, **_):
        completions = []
        for p in prompts:
            h = sum(p) + len(p)
            for k in range(n):
                length = 1 + (h + 3 * k) % max_new_tokens
                completions.append([self.low + (h * 31 + k * 7 + j * 13) % self.span for j in range(length)])
        return Rollout(completions, [len(c) == max_new_tokens for c in completions])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from launcher.config.schema import load_run_config
    from launcher.engines.distributed import destroy_distributed, init_distributed
    from launcher.training.entry import setup_logging
    from recipes.grpo import GRPORecipe

    cfg = load_run_config(args.run_dir)
    dist_info = init_distributed(cfg.parallelism.backend)
    setup_logging(dist_info.rank)
    recipe = GRPORecipe(cfg, args.run_dir, dist_info)
    try:
        recipe.setup()
        digits = recipe.tokenizer("0123456789", add_special_tokens=False)["input_ids"]
        recipe.trainer.objective.generation = FixedCompletions(min(digits), min(digits) + 40)
        recipe.train()
    finally:
        recipe.cleanup()
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
