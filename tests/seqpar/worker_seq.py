"""The ranks of the sequence-parallel test (started once by torchrun): train several run dirs one after another in
one process group, each with the SFT recipe as ``python -m recipes.sft`` would; then record the trained weights.

One launch for several cases keeps the test cheap (torchrun and gloo start once)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from launcher.config.schema import load_run_config
    from launcher.engines.distributed import destroy_distributed, init_distributed
    from launcher.training.entry import setup_logging
    from recipes.sft import SFTRecipe

    dist_info = None
    try:
        for run_dir in args.run_dirs:
            cfg = load_run_config(run_dir)
            if dist_info is None:
                dist_info = init_distributed(cfg.parallelism.backend)
                setup_logging(dist_info.rank)
            recipe = SFTRecipe(cfg, run_dir, dist_info)
            try:
                recipe.setup()
                recipe.train()
            finally:
                recipe.cleanup()
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
