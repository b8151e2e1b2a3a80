"""The SFT recipe of one torchrun rank, for the worker scripts that tests start with torchrun
(tests/parallel/worker.py, tests/parallel/load_worker.py, tests/vl/worker_vl.py).

Nothing of the launcher is imported before the worker asks for its rank: load_worker measures memory from there."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def sft_rank(run_dir: Path):
    """This rank's SFTRecipe on the run dir's config, with the process group up and logging set up; on exit the
    recipe is cleaned up and the process group destroyed."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from launcher.config.schema import load_run_config
    from launcher.engines.distributed import destroy_distributed, init_distributed
    from launcher.training.entry import setup_logging
    from recipes.sft import SFTRecipe

    cfg = load_run_config(run_dir)
    dist_info = init_distributed(cfg.parallelism.backend)
    setup_logging(dist_info.rank)
    recipe = SFTRecipe(cfg, run_dir, dist_info)
    try:
        yield recipe
    finally:
        recipe.cleanup()
        destroy_distributed()
