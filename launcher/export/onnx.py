"""``launcher export RUN_DIR --format onnx``: the model as an ONNX graph (input ids, attention mask -> logits) that
onnxruntime runs, checked against torch before the folder is kept.

Why not optimum-onnx (Hugging Face's exporter, which the guides name): its only release (0.1.0, with optimum 2.1)
pins ``transformers<4.58``, and this project runs transformers 5; installing it would downgrade transformers.
So the graph is made by torch's own exporter (``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``),
around a small module that calls the causal LM without a KV cache and returns its logits, with the batch and the
sequence length as dynamic axes. That is the graph optimum exports as its ``text-generation`` task (without
past key values: every step recomputes the prefix, as a scoring or embedding use wants, and what any ONNX
runtime can run). Weights above 2 GB go to ``model.onnx_data`` beside the graph (ONNX's external data).

Every export is checked: onnxruntime's logits for a probe batch (two rows, one left-padded) must equal torch's
within ``TOLERANCE`` (float32; the export runs in float32 whatever the training dtype); the figures go into
``export_info.json``. The folder is written under a temporary name and renamed at the end (an interrupted export
leaves no half-written model), and an existing target is refused unless ``--force``, which replaces only a
previous export (launcher.export.hf's rules).

Vision-language runs (Qwen2-VL family): the language model is exported with its LM head, for text input (the
graph takes no image; images need ``--format hf``), the same choice as ``--format gguf``; a text-only
Qwen2-VL forward is the language model's with plain rope.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import LauncherError
from launcher.paths import CONFIG_FILE

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4
"""Largest |onnxruntime - torch| logit difference an export may show (float32; both run the same ops, the
difference is reassociation in fused kernels, ~1e-6 on the tiny models)."""
OPSET = 18


class OnnxExportError(LauncherError):
    """The model cannot be exported to ONNX, or the exported graph does not reproduce torch's logits."""


@dataclass
class OnnxArgs:
    out: Optional[str] = None
    """Target folder; default RUN_DIR/export-onnx (an HF folder: <folder>-onnx beside it)."""
    checkpoint: Optional[str] = None
    """step-N: export that checkpoint instead of the final model."""
    force: bool = False
    """Replace a previous ONNX export in the target folder."""


def require_onnx_packages() -> None:
    """One line naming what to install when onnx, onnxscript or onnxruntime is missing."""
    from launcher.packages import package_installed

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not package_installed(name)]
    if missing:
        raise OnnxExportError(f"--format onnx needs {', '.join(missing)}, not installed in this environment;"
                              " pip install -e '.[export]' (or pip install onnx onnxscript onnxruntime)")


def logits_module(model):
    """(input_ids, attention_mask) -> logits of ``model`` (no KV cache), the module the graph is traced from."""
    import torch

    class CausalLMLogits(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return CausalLMLogits(model).eval()


def text_token_limit(config) -> int:
    """Token ids below this are plain text: a VL model's image/video placeholder ids (which a forward without
    pixels refuses) are left out of the probes."""
    special = [getattr(config, k, None) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                   "vision_end_token_id")]
    return min([config.get_text_config().vocab_size] + [v for v in special if isinstance(v, int) and v > 0])


def probe_inputs(vocab_size: int, seed: int = 0):
    """Two rows of 9 token ids, the second left-padded by 3 (the padding path of the mask must match too)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def write_onnx(model, path: Path) -> None:
    """Trace ``model`` (float32, eval) into ``path`` with dynamic batch and sequence axes."""
    import torch

    ids, mask = probe_inputs(text_token_limit(model.config))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad():
        program = torch.onnx.export(
            logits_module(model), (ids, mask), dynamo=True, opset_version=OPSET,
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    # Graphs above protobuf's 2 GB limit keep their weights in one external file beside model.onnx.
    program.save(str(path), external_data=sum(p.numel() * 4 for p in model.parameters()) > 2e9)


def compare_with_torch(model, path: Path, shapes=((2, 9), (1, 17))) -> dict:
    """Run the graph with onnxruntime (CPU) and torch on probe batches of several shapes (the axes are dynamic);
    {max_abs_diff, shapes}. Raises OnnxExportError above ``TOLERANCE``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    vocab = text_token_limit(model.config)
    worst = 0.0
    for i, (rows, length) in enumerate(shapes):
        ids = torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(i + 1))
        mask = torch.ones_like(ids)
        if rows > 1:
            mask[-1, : length // 3] = 0
        with torch.no_grad():
            expected = logits_module(model)(ids, mask).float().numpy()
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        valid = mask.numpy().astype(bool)  # padded positions' logits are not defined by either
        worst = max(worst, float(np.abs(got[valid] - expected[valid]).max()))
    if not worst <= TOLERANCE:
        raise OnnxExportError(f"{path}: onnxruntime's logits differ from torch's by {worst:.3g} (> {TOLERANCE});"
                              " the graph is not kept")
    return {"max_abs_diff": worst, "shapes": [list(s) for s in shapes], "tolerance": TOLERANCE}


def load_source(source: Path, checkpoint: Optional[str]):
    """(model in float32 eval, tokenizer, run config or None, run dir or None, default out) of a run dir (final
    model, merged adapter, or --checkpoint) or a Hugging Face model folder."""
    import torch

    from launcher.inference.trained import check_run_dir, split_checkpoint_path

    source, from_path = split_checkpoint_path(Path(source))
    checkpoint = checkpoint or from_path
    if (source / CONFIG_FILE).is_file():
        from launcher.inference.trained import load_run_model

        run_dir = check_run_dir(source)
        model, tokenizer, cfg, _ = load_run_model(run_dir, checkpoint=checkpoint, merge=True)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        return model.to(torch.float32).eval(), tokenizer, cfg, run_dir, run_dir / "export-onnx"
    if (source / "config.json").is_file():
        if checkpoint:
            raise OnnxExportError(f"--checkpoint {checkpoint}: {source} is a Hugging Face model folder, not a run dir")
        from launcher.models.tokenizers import load_saved_tokenizer
        from launcher.models.vision import auto_class_for

        model = auto_class_for(source).from_pretrained(source, dtype=torch.float32)
        return model.eval(), load_saved_tokenizer(source), None, None, source.parent / f"{source.name}-onnx"
    raise OnnxExportError(f"{source}: neither a run dir (config.yaml) nor a Hugging Face model folder (config.json)")


def export_onnx(source: Path, args: OnnxArgs) -> dict:
    """Export ``source`` (run dir or HF folder) to ``args.out``/model.onnx with its config and tokenizer; returns
    what export_info.json records (path, parameters, the onnxruntime check)."""
    require_onnx_packages()
    from launcher.export.hf import INFO_FILE, check_target
    from launcher.files import apply_umask
    from launcher.models.tokenizers import save_tokenizer

    model, tokenizer, cfg, run_dir, default = load_source(Path(source), args.checkpoint)
    out = Path(args.out) if args.out else default
    check_target(run_dir or Path(source), out, args.force)
    model.config.use_cache = False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{int(time.time() * 1000)}"
    tmp.mkdir()
    try:
        try:
            write_onnx(model, tmp / ONNX_FILE)
        except Exception as exc:  # the exporter's errors are long traces; say which model and why in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxExportError(f"torch.onnx.export could not trace this {model.config.model_type} model: {first}"
                                  " (use --format hf or gguf)") from exc
        check = compare_with_torch(model, tmp / ONNX_FILE)
        model.config.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        info = {
            "source": str(Path(source).resolve()),
            "method": cfg.method.name if cfg else None,
            "model_type": model.config.model_type,
            "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"], "opset": OPSET, "dtype": "float32",
            "parameters": sum(p.numel() for p in model.parameters()),
            "onnxruntime_check": check,
            "args": asdict(args),
        }
        info["files"] = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()] + [INFO_FILE])
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        apply_umask(tmp)
        if out.exists():
            check_target(run_dir or Path(source), out, args.force)  # again: files may have appeared meanwhile
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    info["path"] = str(out)
    return info
