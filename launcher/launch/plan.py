"""The dry run: what a launch would do, worked out with no side effects.

``plan_run(overrides, name)`` composes the config (Hydra), validates it, runs the preflight and renders
what would run: the sbatch script and per-node torchrun command (SLURM), the local command, or a sweep's
points and job arrays. It writes and queues nothing (the preflight only checks that the output root is
writable). ``launcher train --dry-run`` prints the plan, the UI's Preview shows it, and
``launcher.launch.run.launch_run`` starts it; none of them composes or checks on its own.

A single run's preflight refusal is kept in the plan (``refusal``) so that the page can show the config and
the plan next to the problems; a config that does not compose, and a sweep with a bad point, raise.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from launcher.config.schema import Config
from launcher.errors import LauncherError, PreflightError


@dataclass
class SweepPlan:
    points: list
    """``launcher.sweep.plan.SweepPoint`` per point, each composed and preflighted."""
    grid: object
    """The expanded ``launcher.sweep.expand.Grid``."""


@dataclass
class RunPlan:
    overrides: list
    """As typed (a sweep's with their comma lists)."""
    name: str
    """The run's name (``<model>-<method>-<data>`` unless given), or the sweep's."""
    cfg: Config
    """The composed config; a sweep's first point."""
    would_run: str = ""
    """The sbatch script and per-node torchrun command, the local command, or the sweep's points and arrays."""
    notes: list = field(default_factory=list)
    """How the request was read, for the user (``data=custom`` implied, ``--parallel`` that SLURM ignores)."""
    warnings: list = field(default_factory=list)
    """The preflight's warnings; a sweep's own (its points' are on the points)."""
    refusal: Optional[PreflightError] = None
    """The preflight's refusal, every problem on its own line; None when it passed."""
    render_error: Optional[LauncherError] = None
    """Why ``would_run`` could not be rendered (a value the renderer refuses); None when it was."""
    sweep: Optional[SweepPlan] = None
    """The points of a grid (``launcher train -m``); None for one run."""
    parallel: int = 1
    """cluster=local sweeps: points run at the same time."""

    @property
    def ok(self) -> bool:
        """Passed every check: ``launch_run`` would start it."""
        return self.refusal is None and self.render_error is None

    def raise_if_refused(self) -> None:
        if self.refusal is not None:
            raise self.refusal
        if self.render_error is not None:
            raise self.render_error

    def warning_lines(self) -> list:
        """The warnings as the CLI prints them: a sweep's points' warnings once each, saying which points."""
        lines = [f"warning: {w}" for w in self.warnings]
        if self.sweep is None:
            return lines
        seen: dict = {}
        for point in self.sweep.points:
            for warning in point.warnings:
                seen.setdefault(warning, []).append(point.index)
        for warning, indices in seen.items():
            where = "every point" if len(indices) == len(self.sweep.points) else f"point(s) {', '.join(map(str, indices))}"
            lines.append(f"warning ({where}): {warning}")
        return lines

    def config_yaml(self) -> str:
        import yaml

        from launcher.config.schema import config_to_dict

        return yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False)


def plan_run(overrides: Sequence[str], name: Optional[str] = None, *, sweep: bool = False, parallel: int = 1,
             preflight: bool = True, timings: Optional[dict] = None) -> RunPlan:
    """Compose, validate, preflight and render what would run; nothing is written or queued.

    sweep=True: every combination of the comma lists / range() / choice() / glob() overrides, each point
    composed and preflighted (one bad point raises PreflightError naming it). preflight=False: compose and
    validate only (``launcher bench``: it times the start-up from the command and queues nothing that could
    wait to be refused). Raises ConfigError when the config does not compose.
    """
    overrides = list(overrides)
    if sweep:
        return _plan_sweep(overrides, name, parallel, timings)
    from launcher.config.compose import compose_config, default_run_name, uses_implicit_data_group

    # Unknown keys and wrong types raise here; invalid values are listed by the preflight with its other findings.
    cfg = compose_config(overrides, check=not preflight)
    plan = RunPlan(overrides=overrides, name=default_run_name(cfg, name), cfg=cfg, parallel=parallel)
    if uses_implicit_data_group(overrides):
        plan.notes.append("data.dataset_dir/data.datasets given without a data group: using data=custom (its own"
                          " settings, not the default tasks' epochs, held-out set and exact-match check)")
    if preflight:
        from launcher.checks.preflight import run_preflight

        try:
            plan.warnings = run_preflight(cfg)
        except PreflightError as exc:
            plan.refusal = exc
    from launcher.config.text_values import text_problems

    if plan.refusal is not None and text_problems(cfg):
        return plan  # a value with a newline would break the script's lines: nothing is rendered from it
    try:
        plan.would_run = describe_run(cfg, plan.name)
    except LauncherError as exc:
        plan.render_error = exc
    except Exception:
        # A value the preflight refused can break the rendering (a zero divisor, a negative size); the refusal
        # has the line that matters. With a config that passed, such an error is a bug: raise.
        if plan.refusal is None:
            raise
    return plan


def describe_run(cfg: Config, name: str) -> str:
    """What one run would start: the sbatch script and per-node torchrun command, or the local command."""
    if cfg.cluster.kind == "slurm":
        from launcher.launch.slurm_submit import render_plan

        # The run dir gets its date and time when it is made; the plan shows where it will be.
        would_be = Path(cfg.run.output_root).resolve() / name / "<date>" / "<time>"
        return render_plan(cfg, would_be)
    from launcher.launch.local import describe_local

    return describe_local(cfg)


def _plan_sweep(overrides: list, name: Optional[str], parallel: int, timings: Optional[dict]) -> RunPlan:
    from launcher.sweep.plan import describe, plan_sweep, sweep_warnings

    sweep_name, points, grid = plan_sweep(overrides, name, timings)
    plan = RunPlan(overrides=overrides, name=sweep_name, cfg=points[0].cfg, sweep=SweepPlan(points, grid),
                   warnings=sweep_warnings(grid, points), would_run=describe(sweep_name, points, grid),
                   parallel=parallel)
    if parallel > 1 and plan.cfg.cluster.kind == "slurm":
        plan.notes.append("--parallel is for cluster=local; on SLURM, cluster.array_parallelism caps the running tasks")
    return plan


def dry_run_report(plan: RunPlan) -> str:
    """What ``launcher train --dry-run`` prints: the resolved config and what would run (with the precision and
    memory estimate of one run), or a sweep's points and arrays."""
    if plan.sweep is not None:
        return plan.would_run + "\n# preflight passed for every point; dry run: nothing was written or launched"
    from launcher.checks.memory import memory_summary
    from launcher.checks.model import describe_precision

    from launcher.training.probes import scoring_plan

    lines = ["# resolved config", plan.config_yaml(), plan.would_run, f"# precision: {describe_precision(plan.cfg)}"]
    scoring = scoring_plan(plan.cfg)  # the forwards spent scoring and evaluating before, during and after training
    if scoring:
        lines.append(scoring)
    summary = memory_summary(plan.cfg)
    if summary:
        lines.append(summary)
    lines.append("# preflight passed; dry run: nothing was launched")
    return "\n".join(lines)


def print_messages(plan: RunPlan) -> None:
    """Notes and warnings to stderr, as the CLI shows them before the plan or the launch."""
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    for line in plan.warning_lines():
        print(line, file=sys.stderr)
