"""One rank of a PPO parallelism test (started by torchrun): the PPO recipe on the run dir's config, with its
completions fixed by the prompts (GRPO's ``FixedCompletions``) instead of sampled, so that one process and two
ranks under any engine train on the same completions and their losses can be compared."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from launcher.config.schema import load_run_config
    from launcher.engines.distributed import destroy_distributed, init_distributed
    from launcher.training.entry import setup_logging
    from recipes.ppo import PPORecipe
    from tests.grpo.grpo_worker import FixedCompletions

    cfg = load_run_config(args.run_dir)
    dist_info = init_distributed(cfg.parallelism.backend)
    setup_logging(dist_info.rank)
    recipe = PPORecipe(cfg, args.run_dir, dist_info)
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
