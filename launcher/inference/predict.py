"""Batched generation on a dataset's prompts, scored with ROUGE-1/2/L and BLEU-4 (LLaMA-Factory's predict).

``run_predict(cfg, run_dir, args)`` is pure in the sense that matters for a cluster: it takes a resolved
config and its arguments, reads only the run dir and the datasets, and writes only
``RUN_DIR/predict/<name>[-N]/``: ``predictions.jsonl`` (prompt, label, prediction per sample), ``metrics.json``
and ``request.yaml`` (the config and arguments it ran with). The CLI calls it in-process; a SLURM job runs
``python -m launcher.inference.predict RUN_DIR/predict/<name>/request.yaml`` to repeat it on a GPU node.
Each call writes a new folder (``<name>``, then ``<name>-2``, ...), so earlier predictions are never replaced.

Prompts are rendered the way training rendered them (``launcher.inference.prompts``); each answer is the text after
the prompt up to the end-of-turn token, special tokens dropped, stripped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from launcher.config.schema import Config, config_to_dict, parse_config
from launcher.errors import ConfigError

log = logging.getLogger("launcher.inference.predict_cli")

PREDICT_DIR = "predict"
REQUEST_FILE = "request.yaml"


@dataclass
class PredictArgs:
    datasets: list = field(default_factory=list)
    """Dataset names to predict on; empty: the run's eval datasets, else its val_size split."""
    max_new_tokens: int = 512
    do_sample: bool = False
    """Greedy by default, so that scores are reproducible."""
    temperature: float = 0.95
    top_p: float = 0.7
    batch_size: int = 8
    limit: Optional[int] = None
    """Predict on the first N samples only."""
    checkpoint: Optional[str] = None
    """step-N: predict with that checkpoint instead of the final model."""
    dtype: str = "auto"
    """auto (bf16 on a GPU that has it, else fp32), float32, bfloat16, float16."""
    seed: int = 42

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size: must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit: must be >= 1, got {self.limit}")
        if self.do_sample and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise ConfigError("--temperature must be > 0 and --top-p in (0, 1] when sampling")


def output_dir(run_dir: Path, label: str, args: PredictArgs) -> Path:
    """A new folder for this call: ``predict/<label>``, then ``<label>-2``, ``-3``...; earlier ones are kept."""
    name = label if not args.checkpoint else f"{label}@{Path(args.checkpoint).name}"
    root = Path(run_dir) / PREDICT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        candidate = root / (name if i == 1 else f"{name}-{i}")
        try:
            candidate.mkdir()  # atomic: two predictions at once never share a folder
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"predict: {root} already holds 9999 results for '{name}'; move some away")


def generate_batch(model, tokenizer, prompts: list[str], args: PredictArgs, device, images=None,
                   vision=None) -> tuple[list[str], list[int]]:
    """Answers to already-rendered prompts, and how many tokens each generated (VL: with their images)."""
    from launcher.inference.generation import generate_texts

    return generate_texts(model, tokenizer, prompts, args.max_new_tokens, device, args.do_sample, args.temperature,
                          args.top_p, images=images, vision=vision)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_predict(cfg: Config, run_dir: Path, args: PredictArgs, progress: Optional[bool] = None) -> dict:
    """Generate, score and write; returns the metrics (with ``output_dir``)."""
    import yaml
    from tqdm import tqdm

    from launcher.inference.prompts import held_out_samples, prompt_renderer
    from launcher.inference.generation import exact_match, prompt_and_reference
    from launcher.engines.distributed import choose_device
    from launcher.engines.precision import requested_dtype
    from launcher.inference.text_metrics import pair_scores, similarity_metrics
    from launcher.inference.trained import load_run_model

    args.check()
    run_dir = Path(run_dir)
    label, samples = held_out_samples(cfg, args.datasets or None)
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise ConfigError(f"predict: dataset '{label}' has no samples")
    out_dir = output_dir(run_dir, label, args)
    _write_atomic(out_dir / REQUEST_FILE, yaml.safe_dump(
        {"run_dir": str(run_dir.resolve()), "args": asdict(args), "config": config_to_dict(cfg)}, sort_keys=False))

    device = choose_device()
    model, tokenizer, _, source = load_run_model(run_dir, checkpoint=args.checkpoint, merge=True, device=device)
    dtype = requested_dtype(args.dtype, device)
    if dtype != torch.float32:
        model.to(dtype)
    render = prompt_renderer(tokenizer, cfg)
    pairs = [prompt_and_reference(s) for s in samples]
    from launcher.data import vision_data
    from launcher.data.vision import expand_prompt

    from launcher.models.omni import is_omni, refuse_omni_generation

    if is_omni(cfg.model):
        refuse_omni_generation("launcher predict")
    vision, _ = vision_data(cfg, tokenizer)
    images: list = []
    if vision is not None:  # VL: vision spans in the prompt text, the images beside it
        expanded = [expand_prompt(conv, s.get("images") or [], vision, f"{label} sample {k}")
                    for k, ((conv, _), s) in enumerate(zip(pairs, samples))]
        images = [list(zip(s.get("images") or [], grids)) for (_, grids), s in zip(expanded, samples)]
        pairs = [(conv, ref) for (conv, _), (_, ref) in zip(expanded, pairs)]
    prompts = [render(conv, s.get("tools")) for (conv, _), s in zip(pairs, samples)]
    labels = [ref for _, ref in pairs]

    # Longest first, so each batch holds prompts of similar length (less padding); results go back in order.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    predictions: list[Optional[str]] = [None] * len(prompts)
    generated = 0
    torch.manual_seed(args.seed)
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=len(prompts), desc=f"predict {label}", unit="sample", dynamic_ncols=True, file=sys.stderr,
               disable=not progress)
    t0 = time.time()
    for start in range(0, len(order), args.batch_size):
        idx = order[start: start + args.batch_size]
        texts, counts = generate_batch(model, tokenizer, [prompts[i] for i in idx], args, device,
                                       [images[i] for i in idx] if vision is not None else None, vision)
        for i, text in zip(idx, texts):
            predictions[i] = text
        generated += sum(counts)
        bar.update(len(idx))
        bar.set_postfix(tok_s=f"{generated / max(time.time() - t0, 1e-9):.0f}")
    bar.close()
    seconds = time.time() - t0

    with open(out_dir / ".predictions.jsonl.tmp", "w", encoding="utf-8") as fh:
        for prompt, ref, pred in zip(prompts, labels, predictions):
            fh.write(json.dumps({"prompt": prompt, "label": ref, "prediction": pred, **pair_scores(pred, ref)},
                                ensure_ascii=False) + "\n")
    os.replace(out_dir / ".predictions.jsonl.tmp", out_dir / "predictions.jsonl")
    metrics = similarity_metrics(predictions, labels)
    metrics.update(
        exact_match=round(100 * exact_match(predictions, labels), 4),
        n=len(labels), dataset=label, model=source, generated_tokens=generated, seconds=round(seconds, 2),
        generated_tokens_per_s=round(generated / max(seconds, 1e-9), 2), device=str(device),
        args=asdict(args),
    )
    _write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False))
    metrics["output_dir"] = str(out_dir)
    return metrics


def load_request(path: Path) -> tuple[Config, Path, PredictArgs]:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(PredictArgs)}
    unknown = set(data["args"]) - names
    if unknown:
        raise ConfigError(f"{path}: unknown predict arguments {sorted(unknown)}")
    return parse_config(data["config"]), Path(data["run_dir"]), PredictArgs(**data["args"])


def main(argv: Optional[list] = None) -> int:
    """``python -m launcher.inference.predict REQUEST_YAML``: what a SLURM job runs."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m launcher.inference.predict RUN_DIR/predict/<name>/request.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg, run_dir, args = load_request(Path(argv[0]))
    metrics = run_predict(cfg, run_dir, args, progress=True)
    print(json.dumps({k: metrics[k] for k in ("rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match", "n")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
