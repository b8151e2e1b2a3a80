"""What every rank runs: ``python -m launcher.training.entry --run-dir RUN_DIR`` (under torchrun, or alone).

It reads the resolved config the launcher wrote into the run dir; Hydra is never involved here.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from launcher.config.schema import load_run_config
from launcher.errors import LauncherError


def setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "urllib3", "datasets", "transformers.modeling_utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def recipe_for(method: str):
    if method in ("sft_full", "lora"):
        from recipes.sft import SFTRecipe

        return SFTRecipe
    if method == "dpo":
        from recipes.dpo import DPORecipe

        return DPORecipe
    raise LauncherError(f"method.name: no recipe for '{method}'")


def run(run_dir: Path, evaluations: bool = True) -> dict:
    """Set up and train. ``evaluations=False`` (launcher bench) leaves out every evaluation."""
    from launcher.engines.distributed import destroy_distributed, init_distributed

    from launcher.training.preemption import StopFlag

    # First, so that a preemption signal arriving during setup is kept for the first step boundary.
    stop_flag = StopFlag(run_dir)
    cfg = load_run_config(run_dir)
    dist_info = init_distributed(cfg.parallelism.backend)
    setup_logging(dist_info.rank)
    recipe = recipe_for(cfg.method.name)(cfg, run_dir, dist_info)
    recipe.stop_flag = stop_flag
    recipe.evaluations = evaluations
    try:
        recipe.setup()
        summary = recipe.train()
    finally:
        stop_flag.close()
        recipe.cleanup()
        destroy_distributed()
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(args.run_dir.resolve())
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
