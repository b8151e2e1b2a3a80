"""``launcher <subcommand> ...``: a table from subcommand to function."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from launcher.errors import LauncherError

USAGE = """usage: launcher <command> [args]

commands:
  train [OVERRIDES...] [--dry-run] [--name NAME]   compose, check (preflight) and launch a training run,
                                                   here (cluster=local) or on SLURM (cluster=slurm_*)
  train -m OVERRIDES... [--parallel N] [--dry-run] grid sweep (a=1,2 b=x,y): one SLURM job array per
                                                   resource shape; locally one after another or N at a time
  sweep report SWEEP_DIR [--out PNG] [--json]      every point's state, losses, errors; a plot
  status|logs [-f]|cancel RUN_DIR|JOB_ID           follow a SLURM run
  data preview|dump [OVERRIDES...]                 look at the tokenized data (labels, packing)
  export RUN_DIR [--out DIR]                       merge LoRA / write a standalone HF model
  predict RUN_DIR [--dataset NAME]                 generate on a dataset; ROUGE-1/2/L, BLEU-4
  chat RUN_DIR [--system TEXT] [--base]            chat with the trained model in the terminal
  bench [OVERRIDES...] [--steps N]                 speed and memory of N training steps (experiment=bench_reference)
  plot RUN_DIR                                     redraw the loss plot of a run

Overrides are Hydra's: `launcher train method=lora method.lora.r=16 train.max_steps=100`.
"""


def train_main(argv: list[str]) -> int:
    if any(a in ("-m", "--multirun") for a in argv):
        from launcher.sweep.launch import sweep_main

        return sweep_main(argv)
    parser = argparse.ArgumentParser(prog="launcher train", add_help=True)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, key=value or group=option")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and run the preflight; launch nothing")
    parser.add_argument("--name", default=None, help="run name (default: <model>-<method>-<data>)")
    args = parser.parse_args(argv)

    from launcher.config.compose import REPO_ROOT, compose_config, default_run_name
    from launcher.rundir import make_run_dir, write_code_version, write_overrides, write_run_config

    cfg = compose_config(args.overrides)  # raises ConfigError before anything is written
    name = default_run_name(cfg, args.name)

    from launcher.preflight import run_preflight

    for warning in run_preflight(cfg):  # raises PreflightError before anything is written or queued
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        import yaml

        from launcher.config.schema import config_to_dict

        print("# resolved config")
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        if cfg.cluster.kind == "slurm":
            from pathlib import Path

            from launcher.slurm.submit import render_plan

            would_be = Path(cfg.run.output_root).resolve() / name / "<date>" / "<time>"
            print(render_plan(cfg, would_be))
        else:
            from launcher.local import describe_local

            print(describe_local(cfg))
        print("# preflight passed; dry run: nothing was launched")
        return 0
    run_dir = make_run_dir(cfg.run.output_root, name)
    write_run_config(run_dir, cfg)
    write_overrides(run_dir, args.overrides)
    write_code_version(run_dir, REPO_ROOT)
    print(f"run dir: {run_dir}", flush=True)
    if cfg.cluster.kind == "local":
        from launcher.local import run_local

        return run_local(cfg, run_dir)
    from launcher.slurm.submit import submit_run

    return 0 if submit_run(cfg, run_dir).get("job_id") else 1


def plot_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="launcher plot")
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    from launcher.training.metrics import plot_loss

    out = plot_loss(args.run_dir)
    print(out or "no metrics to plot")
    return 0 if out else 1


def data_main(argv: list[str]) -> int:
    from launcher.data.cli import data_main as impl

    return impl(argv)


def _lazy(module: str, function: str) -> Callable[[list[str]], int]:
    """A subcommand whose module is imported only when it runs (start-up time matters)."""

    def call(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(argv)

    call.__name__ = function
    return call


def bench_main(argv: list[str]) -> int:
    from launcher.bench import bench_main as impl

    return impl(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_main,
    "data": data_main,
    "bench": bench_main,
    "plot": plot_main,
    "sweep": _lazy("launcher.sweep.report", "sweep_command_main"),
    "status": _lazy("launcher.slurm.jobs", "status_main"),
    "logs": _lazy("launcher.slurm.jobs", "logs_main"),
    "cancel": _lazy("launcher.slurm.jobs", "cancel_main"),
    "export": _lazy("launcher.inference.export_cli", "export_main"),
    "predict": _lazy("launcher.inference.predict_cli", "predict_main"),
    "chat": _lazy("launcher.inference.chat", "chat_main"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command '{argv[0]}'\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return command(argv[1:])
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
