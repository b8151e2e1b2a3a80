"""One rank of the 2-process VL test (started by torchrun): train with the SFT recipe, record which micro-batches
had images on this rank (the test needs a step where one rank had none)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.torchrun_rank import sft_rank


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)

    seen = []
    with sft_rank(args.run_dir) as recipe:
        rank = recipe.dist.rank
        recipe.setup()
        collate = recipe.trainer.objective.collate

        def recording(rows):
            batch = collate(rows)
            images = any(r.get("images") for r in rows)
            seen.append({"images": images, "dummy": batch["pixel_values"] is not None and not images})
            return batch

        recipe.trainer.objective.collate = recording
        recipe.train()
        engine = recipe.engine.report()
    (args.run_dir / f"batches_rank{rank}.json").write_text(json.dumps({"batches": seen, "engine": engine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
