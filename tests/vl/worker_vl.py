"""One rank of the 2-process VL test (started by torchrun): train with the SFT recipe, record which micro-batches
had images on this rank (the test needs a step where one rank had none)."""
from __future__ import annotations

import argparse
import json
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
    from recipes.sft import SFTRecipe

    cfg = load_run_config(args.run_dir)
    dist_info = init_distributed(cfg.parallelism.backend)
    setup_logging(dist_info.rank)
    recipe = SFTRecipe(cfg, args.run_dir, dist_info)
    seen = []
    try:
        recipe.setup()
        collate = recipe.trainer.objective.collate

        def recording(rows):
            batch = collate(rows)
            seen.append({"images": batch["pixel_values"] is not None, "dummy": "dummy_pixel_values" in batch})
            return batch

        recipe.trainer.objective.collate = recording
        recipe.train()
        engine = recipe.engine.report()
    finally:
        recipe.cleanup()
        destroy_distributed()
    (args.run_dir / f"batches_rank{dist_info.rank}.json").write_text(json.dumps({"batches": seen, "engine": engine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
