"""One rank of a sharded-loading measurement (started by torchrun): set up the run's recipe (model built and
loaded the way its parallelism loads it), record this rank's peak RSS after building the model (ZeRO-3 loads
there), after the engine (FSDP loads there) and after a probe forward, the probe logits of the freshly loaded
model, then train one step and record the peak again. Writes ``load_rank{R}.json`` (and rank 0 ``load_logits.pt``)
into the run dir.

Peak RSS is the kernel's high-water mark (VmHWM), reset (``/proc/self/clear_refs`` = 5) right before the
model is built, so imports and data do not count; ``rss_before_model`` is what the process held then.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from tests.torchrun_rank import sft_rank


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--probe", default="", help="comma-separated token ids of the probe row")
    parser.add_argument("--checkpoint-after", action="store_true",
                        help="after the measurements, write a checkpoint of the step (for the export measurement)")
    args = parser.parse_args(argv)

    with sft_rank(args.run_dir) as recipe:
        measure(recipe, args)
    return 0


def measure(recipe, args) -> None:
    """The marks and logits the module docstring lists, written into the run dir."""
    cfg, dist_info = recipe.cfg, recipe.dist
    recipe.evaluations = False  # memory and logits of loading and one step; no held-out passes
    # Recipe.build_policy builds every recipe's model with the build_model it imported
    import launcher.training.recipe as recipe_module

    build = recipe_module.build_model
    marks: dict[str, int] = {}

    def measured_build(*a, **kw):
        marks["rss_before_model_kib"] = status_kib("VmRSS")
        reset_peak()
        model = build(*a, **kw)
        marks["peak_build_kib"] = status_kib("VmHWM")
        return model

    recipe_module.build_model = measured_build
    # Modules the build and the first step import on first use, imported now: their code is not the model's
    # memory, and must not count in the peak measured from the reset.
    import importlib

    for name in ("transformers.models.qwen2.modeling_qwen2", "peft", "safetensors.torch", "matplotlib.pyplot",
                 "torch.distributed.fsdp", "torch.distributed.checkpoint",
                 *(["deepspeed"] if cfg.parallelism.strategy == "deepspeed" else [])):
        importlib.import_module(name)
    recipe.setup()
    marks["peak_setup_kib"] = status_kib("VmHWM")
    engine = recipe.engine
    engine.eval()
    ids = torch.tensor([[int(t) for t in args.probe.split(",")]])
    with torch.no_grad(), engine.inference_context():
        logits = engine.model(input_ids=ids.to(dist_info.device)).logits
    marks["peak_probe_kib"] = status_kib("VmHWM")
    engine.train()
    recipe.train()
    marks["peak_step_kib"] = status_kib("VmHWM")
    marks["report"] = engine.report()
    if args.checkpoint_after:
        recipe.trainer.save_checkpoint()  # collective: every rank writes its shard
    (args.run_dir / f"load_rank{dist_info.rank}.json").write_text(json.dumps(marks))
    if dist_info.is_main:
        torch.save(logits.float().cpu(), args.run_dir / "load_logits.pt")


if __name__ == "__main__":
    sys.exit(main())
