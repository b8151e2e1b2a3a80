"""One rank of a parallelism test run (started by torchrun): train with the recipe, then record probe logits.

The logits come from the live, still-sharded model right after training (a collective forward on every
rank), so comparing them with the reloaded saved model checks that gathering and saving lost nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

PROBE_FILE = "probe_logits.pt"
PROBE_ROWS = 3


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
    try:
        recipe.setup()
        recipe.train()
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
    finally:
        recipe.cleanup()
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
