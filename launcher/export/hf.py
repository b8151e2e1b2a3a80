"""Export a run as one standalone Hugging Face model folder: LoRA merged into its base, sharded safetensors.

What ``from_pretrained`` and vLLM load: ``config.json``, ``generation_config.json``, ``model*.safetensors``
(+ ``model.safetensors.index.json`` when sharded by ``max_shard_size``), the tokenizer with its chat template,
and ``export_info.json`` saying where it came from. A full fine-tune exports the same way.

The folder is written under a temporary name beside the target and renamed at the end, so an interrupted
export never leaves a half-written model where a loader would find it. An existing target is refused unless
``force``, and ``force`` replaces only a folder that holds a previous export and nothing else (its
``export_info.json`` lists the files it wrote); the run dir itself, its model/ and anything holding the run are
never deleted. Files get the mode the user's umask gives (safetensors alone would write them 0600).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

from launcher.disk_full import disk_full_guard, human_bytes, written_so_far
from launcher.errors import LauncherError
from launcher.files import apply_umask
from launcher.paths import BASE_MODEL_DIR, CHECKPOINTS_DIR, MODEL_DIR
from launcher.models.tokenizers import save_tokenizer
from launcher.inference.trained import adapter_info, check_run_dir, load_run_model, split_checkpoint_path

INFO_FILE = "export_info.json"


class ExportError(LauncherError):
    """The export target is unusable (exists, or is part of the run)."""


@dataclass
class ExportArgs:
    out: Optional[str] = None
    """Target folder; default RUN_DIR/export."""
    max_shard_size: str = "2GB"
    """Largest safetensors file, as transformers reads it (500MB, 2GB, or bytes)."""
    checkpoint: Optional[str] = None
    """step-N: export that checkpoint instead of the final model."""
    dtype: str = "keep"
    """keep (the trained weights' dtype, fp32 here), bfloat16, float16 or float32."""
    force: bool = False
    """Replace an existing target folder."""


def default_out(run_dir: Path) -> Path:
    return Path(run_dir) / "export"


def check_target(run_dir: Path, out: Path, force: bool) -> None:
    run_dir, out = Path(run_dir).resolve(), Path(out).resolve()
    protected = [run_dir, run_dir / MODEL_DIR, run_dir / BASE_MODEL_DIR, run_dir / CHECKPOINTS_DIR]
    if out in protected or out in run_dir.parents:
        raise ExportError(f"--out {out}: that folder holds the run itself; export to a new folder (default RUN_DIR/export)")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not force:
            raise ExportError(f"--out {out} already exists; pass --force to replace it, or choose another --out")
        if not out.is_dir():
            raise ExportError(f"--out {out} is a file, not a folder; remove it or choose another --out")
        foreign = files_not_from_an_export(out)
        if foreign:
            raise ExportError(
                f"--out {out}: --force replaces only a previous export, and this folder holds other files"
                f" ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose another --out,"
                " or move them away yourself"
            )


def files_not_from_an_export(folder: Path) -> list[str]:
    """The files in ``folder`` that a previous export of ours did not write (all of them when it has no
    export_info.json listing its files)."""
    present = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if not p.is_dir())
    try:
        ours = set(json.loads((Path(folder) / INFO_FILE).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return present
    return [name for name in present if name not in ours]


def export_run(run_dir: Path, args: ExportArgs) -> Path:
    """Write the standalone model; return its folder. ``run_dir`` may be ``RUN_DIR/checkpoints/step-N``."""
    run_dir, from_path = split_checkpoint_path(run_dir)
    if from_path and not args.checkpoint:
        args = replace(args, checkpoint=from_path)
    run_dir = check_run_dir(run_dir)
    out = Path(args.out) if args.out else default_out(run_dir)
    check_target(run_dir, out, args.force)
    from launcher.engines.precision import DTYPES

    if args.dtype != "keep" and args.dtype not in DTYPES:
        raise ExportError(f"--dtype: '{args.dtype}' is not one of keep, {', '.join(DTYPES)}")

    from launcher.models.vision import save_vision_files

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{int(time.time() * 1000)}"
    streamed = None
    if args.checkpoint:
        # Sharded checkpoints stream tensor by tensor (never the whole model in this process).
        from launcher.config.schema import load_run_config
        from launcher.export.stream import stream_export
        from launcher.inference.trained import resolve_checkpoint, run_tokenizer

        cfg = load_run_config(run_dir)
        checkpoint_dir = resolve_checkpoint(run_dir, args.checkpoint)
        tokenizer = run_tokenizer(run_dir, cfg)
        try:
            with disk_full_guard(out, "the export", lambda: written_so_far(tmp)):
                streamed = stream_export(run_dir, cfg, checkpoint_dir, tokenizer, tmp,
                                         None if args.dtype == "keep" else DTYPES[args.dtype],
                                         parse_size(args.max_shard_size))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        source = f"checkpoint {checkpoint_dir.name} (streamed)"
    if streamed is None:
        model, tokenizer, cfg, source = load_run_model(run_dir, checkpoint=args.checkpoint, merge=True)
        if hasattr(model, "merge_and_unload"):  # a PEFT model that load_trained_model did not merge
            model = model.merge_and_unload()
        if args.dtype != "keep":
            model.to(DTYPES[args.dtype])
        gen = model.generation_config
        # Generation must stop at the end-of-turn token the run trained, and pad with a real id.
        if gen.eos_token_id is None:
            gen.eos_token_id = tokenizer.eos_token_id
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id
        model.config.use_cache = True
    weights = "" if streamed else \
        f"the weights alone take {human_bytes(sum(p.numel() * p.element_size() for p in model.parameters()))}"
    try:
        with disk_full_guard(out, "the export", lambda: weights or written_so_far(tmp)):
            if streamed is None:
                model.save_pretrained(tmp, max_shard_size=args.max_shard_size, safe_serialization=True)
            save_tokenizer(tokenizer, tmp)
            save_vision_files(tmp, cfg, tokenizer)  # VL: preprocessor config + chat template with image slots
            adapter = adapter_info(run_dir)
            info = {
                "run_dir": str(run_dir.resolve()),
                "source": source,
                "method": cfg.method.name,
                "merged_lora": cfg.method.finetuning == "lora",
                "lora": {"r": adapter["r"], "alpha": adapter["lora_alpha"]} if adapter else None,
                "args": asdict(args),
                "dtype": streamed["dtype"] if streamed else str(next(model.parameters()).dtype).replace("torch.", ""),
                "parameters": streamed["parameters"] if streamed else sum(p.numel() for p in model.parameters()),
            }
            # The list of what we wrote is the marker that lets a later --force replace this folder, and only it.
            info["files"] = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()] + [INFO_FILE])
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
            apply_umask(tmp)
            if out.exists():
                check_target(run_dir, out, args.force)  # again: files may have appeared while the model loaded
                shutil.rmtree(out)
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def parse_size(text: str) -> int:
    """``500MB``, ``2GB``, ``2GiB`` or a byte count -> bytes (transformers' units: GB = 10^9, GiB = 2^30)."""
    from transformers.utils.hub import convert_file_size_to_int

    return convert_file_size_to_int(text)


def exported_files(out: Path) -> list[str]:
    return sorted(p.name for p in Path(out).iterdir())
