"""``launcher export RUN_DIR``: a standalone HF model folder (LoRA merged) that from_pretrained and vLLM load,
or with ``--format gguf`` one GGUF file for llama.cpp (``launcher.export.gguf``), or with ``--format onnx`` an ONNX
graph checked with onnxruntime (``launcher.export.onnx``)."""
from __future__ import annotations

import argparse
import sys


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="launcher export",
        description="Merge a LoRA adapter into its base (or take a full fine-tune) and write one HF model folder.",
    )
    parser.add_argument("run_dir", help="a run dir (or, for --format gguf/onnx, also a Hugging Face model folder)")
    parser.add_argument("--format", default="hf", choices=["hf", "gguf", "onnx"],
                        help="hf: a model folder (default); gguf: one .gguf file (Qwen2, Llama); onnx: model.onnx"
                             " (input ids, attention mask -> logits), checked against torch with onnxruntime")
    parser.add_argument("--out", default=None,
                        help="target folder (default RUN_DIR/export); gguf: a .gguf file or a folder (RUN_DIR/export-gguf);"
                             " onnx: a folder (RUN_DIR/export-onnx)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest safetensors file, e.g. 500MB, 2GB (default 2GB)")
    parser.add_argument("--checkpoint", default=None, help="export checkpoint step-N instead of the final model")
    parser.add_argument("--dtype", default=None, choices=["keep", "bfloat16", "float16", "float32", "f32", "f16", "q8_0"],
                        help="hf: keep (default), bfloat16, float16, float32; gguf: f32, f16 (default), q8_0")
    parser.add_argument("--force", action="store_true", help="replace an existing target folder")
    parser.add_argument("--from-llamafactory", metavar="FILE.yaml", default=None,
                        help="a LLaMA-Factory merge/export (export_dir) file: translated to these arguments; the equivalent command is"
                             " printed")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)
    if args.format == "onnx":
        from launcher.errors import ConfigError
        from launcher.export.onnx import OnnxArgs, export_onnx

        if args.dtype not in (None, "float32", "f32"):
            raise ConfigError(f"--dtype: '{args.dtype}' is not available with --format onnx, which exports float32")
        info = export_onnx(args.run_dir, OnnxArgs(out=args.out, checkpoint=args.checkpoint, force=args.force))
        check = info["onnxruntime_check"]
        print(f"exported: {info['path']} ({info['model_type']}, {info['parameters']} parameters, float32; onnxruntime"
              f" logits within {check['max_abs_diff']:.2g} of torch's)")
        return 0
    if args.format == "gguf":
        from launcher.errors import ConfigError
        from launcher.export.gguf import GGUF_DTYPES, GGUFArgs, export_gguf

        dtype = args.dtype or "f16"
        if dtype not in GGUF_DTYPES:
            raise ConfigError(f"--dtype: '{dtype}' is for --format hf; with --format gguf use {', '.join(GGUF_DTYPES)}")
        info = export_gguf(args.run_dir, GGUFArgs(out=args.out, dtype=dtype, checkpoint=args.checkpoint,
                                                  force=args.force))
        tensors = ", ".join(f"{n} {k}" for k, n in sorted(info["tensors"].items()))
        if info.get("note"):
            print(f"note: {info['note']}", file=sys.stderr)
        print(f"exported: {info['path']} ({info['bytes'] / 1e6:.1f} MB; {info['architecture']}; tensors: {tensors};"
              f" tokenizer {info['tokenizer']})")
        return 0
    if args.dtype in ("f32", "f16", "q8_0"):
        from launcher.errors import ConfigError

        raise ConfigError(f"--dtype: '{args.dtype}' is for --format gguf; with --format hf use keep, bfloat16,"
                          " float16 or float32")
    args.dtype = args.dtype or "keep"

    from launcher.export.hf import ExportArgs, export_run, exported_files

    out = export_run(args.run_dir, ExportArgs(out=args.out, max_shard_size=args.max_shard_size,
                                              checkpoint=args.checkpoint, dtype=args.dtype, force=args.force))
    print(f"exported: {out}")
    print("files: " + ", ".join(exported_files(out)))
    return 0
