"""One rank of a parallelism test run (started by torchrun): train with the recipe, then record probe logits.

The logits come from the live, still-sharded model right after training (a collective forward on every
rank), so comparing them with the reloaded saved model checks that gathering and saving lost nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from tests.torchrun_rank import sft_rank

PROBE_FILE = "probe_logits.pt"
PROBE_ROWS = 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--checkpoint-after", action="store_true",
                        help="also write a checkpoint of the final step (its export must give the probe logits)")
    args = parser.parse_args(argv)

    with sft_rank(args.run_dir) as recipe:
        dist_info = recipe.dist
        recipe.setup()
        recipe.train()
        if args.checkpoint_after:
            recipe.trainer.save_checkpoint()  # collective: every rank writes its shard
        batch = recipe.data.collate(recipe.data.eval[:PROBE_ROWS])
        engine = recipe.engine
        engine.eval()
        with torch.no_grad(), engine.inference_context():
            logits = engine.model(input_ids=batch["input_ids"].to(dist_info.device),
                                  attention_mask=batch["attention_mask"].to(dist_info.device)).logits
        if dist_info.is_main:
            torch.save({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                        "logits": logits.float().cpu()}, args.run_dir / PROBE_FILE)
            (args.run_dir / "engine.json").write_text(json.dumps(engine.report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
