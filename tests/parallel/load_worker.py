"""One rank of a sharded-loading measurement (started by torchrun): set up the run's recipe (model built and
loaded the way its parallelism loads it), record this rank's peak RSS after building the model (ZeRO-3 loads
there), after the engine (FSDP loads there) and after a probe forward, the probe logits of the freshly loaded
model, then train one step and record the peak again. Writes ``load_rank{R}.json`` (and rank 0 ``load_logits.pt``)
into the run dir.

Peak RSS is the kernel's high-water mark (VmHWM), reset (``/proc/self/clear_refs`` = 5) right before the
model is built, so imports and data do not count; ``rss_before_model`` is what the process held then. Each
phase (build, engine, probe, the evaluations when kept, forward, backward, optimizer step, final save) also
records its RSS at start and end and its own peak (``phases``), and ``held`` this rank's parameter, trainable
and optimizer-state bytes: tests/parallel/sharded_load.breakdown says from them where the peak goes.
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


class Phases:
    """Each named phase's RSS at its start and end and its own peak (VmHWM reset at its start); what happens
    between phases (data, logging) is kept as the peak of ``between``. Peaks are KiB, absolute."""

    def __init__(self):
        self.rows: list[dict] = []
        self.between = 0

    def wrap(self, owner, attr: str, name: str) -> None:
        """Measure every call of ``owner.attr`` as phase ``name`` (the instance attribute shadows the method)."""
        original = getattr(owner, attr)

        def measured(*a, **kw):
            self.between = max(self.between, status_kib("VmHWM"))
            start = status_kib("VmRSS")
            reset_peak()
            try:
                return original(*a, **kw)
            finally:
                self.rows.append({"phase": name, "start_kib": start, "peak_kib": status_kib("VmHWM"),
                                  "end_kib": status_kib("VmRSS")})
                reset_peak()

        setattr(owner, attr, measured)

    def peak(self) -> int:
        """The highest RSS since the first reset."""
        return max([self.between, status_kib("VmHWM"), *(r["peak_kib"] for r in self.rows)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--probe", default="", help="comma-separated token ids of the probe row")
    parser.add_argument("--checkpoint-after", action="store_true",
                        help="after the measurements, write a checkpoint of the step (for the export measurement)")
    parser.add_argument("--evaluations", action="store_true",
                        help="keep the held-out evaluations before and after training (measured as phases)")
    args = parser.parse_args(argv)

    with sft_rank(args.run_dir) as recipe:
        measure(recipe, args)
    return 0


def measure(recipe, args) -> None:
    """The marks and logits the module docstring lists, written into the run dir."""
    cfg, dist_info = recipe.cfg, recipe.dist
    recipe.evaluations = args.evaluations  # default: memory and logits of loading and one step; no held-out passes
    # Recipe.build_policy builds every recipe's model with the build_model it imported
    import launcher.training.recipe as recipe_module

    phases = Phases()
    phases.wrap(recipe_module, "build_model", "build")
    phases.wrap(recipe, "build_engine", "engine")
    # Modules the build and the first step import on first use, imported now: their code is not the model's
    # memory, and must not count in the peak measured from the reset.
    import importlib

    for name in ("transformers.models.qwen2.modeling_qwen2", "peft", "safetensors.torch", "matplotlib.pyplot",
                 "torch.distributed.fsdp", "torch.distributed.checkpoint",
                 *(["deepspeed"] if cfg.parallelism.strategy == "deepspeed" else [])):
        importlib.import_module(name)
    recipe.setup()
    build = phases.rows[0]
    marks: dict = {"rss_before_model_kib": build["start_kib"], "peak_build_kib": build["peak_kib"],
                   "peak_setup_kib": phases.peak()}
    engine, trainer = recipe.engine, recipe.trainer
    marks["held"] = held_bytes(engine)
    engine.eval()
    ids = torch.tensor([[int(t) for t in args.probe.split(",")]])

    def probe():
        with torch.no_grad(), engine.inference_context():
            return engine.model(input_ids=ids.to(dist_info.device)).logits

    holder = type("Probe", (), {"run": staticmethod(probe)})
    phases.wrap(holder, "run", "probe")
    logits = holder.run()
    marks["peak_probe_kib"] = phases.peak()
    engine.train()
    for owner, attr, name in ((trainer, "log_eval", "eval"), (trainer, "exact_match", "exact match"),
                              (trainer.objective, "micro_batch_loss", "forward"), (engine, "backward", "backward"),
                              (engine, "step", "optimizer step"), (trainer, "save_final", "save")):
        phases.wrap(owner, attr, name)
    recipe.train()
    marks["peak_step_kib"] = phases.peak()
    marks["held"]["optimizer_state"] = optimizer_state_bytes(engine.optimizer)
    marks["peak_between_kib"] = phases.between
    marks["phases"] = phases.rows
    marks["report"] = engine.report()
    if args.checkpoint_after:
        recipe.trainer.save_checkpoint()  # collective: every rank writes its shard
    (args.run_dir / f"load_rank{dist_info.rank}.json").write_text(json.dumps(marks))
    if dist_info.is_main:
        torch.save(logits.float().cpu(), args.run_dir / "load_logits.pt")


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of this rank's optimizer state tensors (AdamW's moments of its share)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's ZeRO wrapper holds the torch optimizer
    total = 0
    for state in inner.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                v = v.to_local() if hasattr(v, "to_local") else v
                total += v.numel() * v.element_size()
    return total


def held_bytes(engine) -> dict:
    """Bytes of this rank's own share of the parameters (FSDP: the local shard; ZeRO-3: the partition), all
    and trainable."""
    total = trainable = 0
    for p in engine.model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else getattr(p, "ds_tensor", p)
        n = local.numel() * local.element_size()
        total += n
        trainable += n if p.requires_grad else 0
    return {"weights": total, "trainable": trainable}


if __name__ == "__main__":
    sys.exit(main())
