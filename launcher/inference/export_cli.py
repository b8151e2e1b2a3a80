"""``launcher export RUN_DIR``: a standalone HF model folder (LoRA merged) that from_pretrained and vLLM load."""
from __future__ import annotations

import argparse


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="launcher export",
        description="Merge a LoRA adapter into its base (or take a full fine-tune) and write one HF model folder.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="target folder (default RUN_DIR/export)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest safetensors file, e.g. 500MB, 2GB (default 2GB)")
    parser.add_argument("--checkpoint", default=None, help="export checkpoint step-N instead of the final model")
    parser.add_argument("--dtype", default="keep", choices=["keep", "bfloat16", "float16", "float32"],
                        help="weight dtype of the export (default: keep the trained dtype)")
    parser.add_argument("--force", action="store_true", help="replace an existing target folder")
    args = parser.parse_args(argv)

    from launcher.inference.export import ExportArgs, export_run, exported_files

    out = export_run(args.run_dir, ExportArgs(out=args.out, max_shard_size=args.max_shard_size,
                                              checkpoint=args.checkpoint, dtype=args.dtype, force=args.force))
    print(f"exported: {out}")
    print("files: " + ", ".join(exported_files(out)))
    return 0
