"""Plan a sweep: compose, validate and preflight EVERY point before anything is written; lay out the sweep dir.

One bad point refuses the whole sweep, naming the point's overrides. The layout is
``<output_root>/sweeps/<name>/<date>/<time>/`` with ``sweep.json`` and one run dir per point; ``launch`` queues
or runs them and ``report`` reads what this writes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from launcher.config.schema import Config
from launcher.errors import ConfigError, PreflightError
from launcher.sweep.expand import Grid, expand_grid

SWEEP_FILE = "sweep.json"
SWEEPS_SUBDIR = "sweeps"
LOCAL_RESULT = "local_result.json"
"""Written into a point's run dir when a local sweep has run it: {"returncode", "started_at", "ended_at"}."""
LOCAL_LOG = "run.log"
"""stdout and stderr of a locally run point."""


# ---------------------------------------------------------------------------------------- the points


@dataclass
class SweepPoint:
    index: int
    overrides: list
    swept: dict
    cfg: Optional[Config] = None
    run_dir: Optional[Path] = None
    job_id: Optional[str] = None
    array_job_id: Optional[str] = None
    array_task: Optional[int] = None
    warnings: list = field(default_factory=list)

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.swept.items()) or " ".join(self.overrides) or "(defaults)"

    def record(self, sweep_dir: Path) -> dict:
        return {
            "index": self.index,
            "overrides": self.overrides,
            "swept": self.swept,
            "run_dir": str(self.run_dir.relative_to(sweep_dir)) if self.run_dir else None,
            "job_id": self.job_id,
            "array_job_id": self.array_job_id,
            "array_task": self.array_task,
        }


def point_dir_name(index: int, swept: dict) -> str:
    """``003_lr=0.001_r=8``: the index keeps order; the last part of each swept key says what it is."""
    parts = [f"{index:03d}"] + [f"{k.lstrip('+~').split('.')[-1]}={v}" for k, v in swept.items()]
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts))
    return name[:100]


def compose_points(point_overrides: list) -> list:
    """Compose every point: a dict, or the ConfigError text, per point. Same result as ``compose_dict``.

    Hydra's compose costs tens of milliseconds (it rebuilds the defaults tree and merges every file), which
    for 100 points is most of the submit time. Points usually differ only in values (method.lr=...), so the
    defaults tree is composed once per distinct set of group choices and each point's value overrides are
    applied to a copy with Hydra's own override code, as Hydra does after composing the defaults.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from omegaconf.errors import MissingMandatoryValue

    from launcher.config.compose import (OWN_DATA, as_value_override, check_group_options, conf_dir, config_groups,
                                         hydra_error_line, missing_value_message, uses_implicit_data_group)
    from launcher.errors import ConfigError

    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        apply_overrides = ConfigLoaderImpl._apply_overrides_to_config
    except (ImportError, AttributeError):  # another Hydra: compose every point in full
        apply_overrides = None
    results: list = []
    bases: dict = {}
    parser = OverridesParser.create()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            groups = config_groups()
            for overrides in point_overrides:
                try:
                    check_group_options(overrides, groups)
                except ConfigError as exc:
                    results.append(str(exc))
                    continue
                if uses_implicit_data_group(overrides):  # as compose_dict does (launcher.config.compose)
                    overrides = [f"data={OWN_DATA}"] + list(overrides)
                hydra_form = [as_value_override(o, groups) for o in overrides]
                values = [o for o, h in zip(overrides, hydra_form) if h == "++" + o] if apply_overrides else []
                structural = tuple(h for o, h in zip(overrides, hydra_form) if o not in values)
                try:
                    if structural not in bases:
                        bases[structural] = compose(config_name="train", overrides=list(structural))
                    cfg = copy.deepcopy(bases[structural])
                    if values:
                        apply_overrides(parser.parse_overrides(["++" + v for v in values]), cfg)
                    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
                except MissingMandatoryValue as exc:
                    results.append(missing_value_message(exc))
                    continue
                except (HydraException, OmegaConfBaseException) as exc:
                    results.append(f"config: {hydra_error_line(exc)}")
                    continue
                results.append(data)
    finally:
        GlobalHydra.instance().clear()
    return results


def _name_of_sweep(cfgs: list, explicit: Optional[str]) -> str:
    from launcher.config.compose import default_run_name

    if explicit:
        return default_run_name(cfgs[0], explicit)
    names = {default_run_name(c) for c in cfgs}
    if len(names) == 1:
        return names.pop()
    return default_run_name(cfgs[0], f"{cfgs[0].model.name}-{cfgs[0].data.name}-sweep")


def check_points(grid: Grid, name: Optional[str] = None, timings: Optional[dict] = None) -> tuple:
    """Compose, validate and preflight every point; nothing is written. Returns (sweep name, points).

    Raises PreflightError listing every point that fails (its overrides and its problem); the sweep is
    refused as a whole so that no half of it waits in a queue.
    """
    from launcher.config.schema import parse_config
    from launcher.errors import LauncherError
    from launcher.checks.preflight import run_preflight

    timings = timings if timings is not None else {}
    points = [SweepPoint(index=i, overrides=list(o), swept=grid.swept_values(o)) for i, o in enumerate(grid.points)]
    failures: list = []
    start = time.perf_counter()
    for point, composed in zip(points, compose_points([p.overrides for p in points])):
        try:
            if isinstance(composed, str):
                raise ConfigError(composed)
            point.cfg = parse_config(composed)
        except LauncherError as exc:
            failures.append((point, str(exc)))
    timings["compose_s"] = time.perf_counter() - start
    if failures:
        raise _refusal(failures, len(points), "config checks")
    sweep_name = _name_of_sweep([p.cfg for p in points], name)
    start = time.perf_counter()
    for point in points:
        cfg = point.cfg
        logger = cfg.logger if cfg.logger.group else dataclasses.replace(cfg.logger, group=sweep_name)
        run = dataclasses.replace(cfg.run, name=f"{sweep_name}-{point.index:03d}")
        point.cfg = dataclasses.replace(cfg, logger=logger, run=run)

    def preflight(point: SweepPoint) -> Optional[str]:
        try:
            point.warnings = run_preflight(point.cfg)
        except LauncherError as exc:
            return str(exc)
        return None

    # The first point alone (it pays for the imports); the rest side by side: most of a preflight is
    # waiting on sinfo and the file system, which threads overlap.
    outcomes = [preflight(points[0])]
    if len(points) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(points) - 1)) as pool:
            outcomes += list(pool.map(preflight, points[1:]))
    failures = [(point, message) for point, message in zip(points, outcomes) if message is not None]
    timings["preflight_s"] = time.perf_counter() - start
    if failures:
        raise _refusal(failures, len(points), "preflight")
    kinds = {p.cfg.cluster.kind for p in points}
    if len(kinds) > 1:
        raise ConfigError(f"sweep: points mix cluster kinds ({', '.join(sorted(kinds))}); sweep one cluster at a time")
    roots = {str(Path(p.cfg.run.output_root).resolve()) for p in points}
    if len(roots) > 1:
        raise ConfigError("sweep: run.output_root differs between points; a sweep lives under one output root")
    return sweep_name, points


def sweep_warnings(grid: Grid, points: list) -> list:
    """Sweeps that waste runs: a LoRA key swept on points that train fully; points that compose alike."""
    from launcher.config.schema import config_to_dict

    out = []
    lora_keys = [k for k in grid.swept_keys if k.lstrip("+").startswith("method.lora.")]
    full = [p.index for p in points if p.cfg.method.finetuning != "lora"]
    if lora_keys and full:
        out.append(f"sweep: {', '.join(lora_keys)} is swept but point(s) {compact_indices(full)} train all weights"
                   " (method.finetuning=full), where it has no effect; add method=lora")
    seen: dict = {}
    for point in points:
        data = config_to_dict(point.cfg)
        data["run"].pop("name", None)
        seen.setdefault(json.dumps(data, sort_keys=True, default=str), []).append(point.index)
    same = [group for group in seen.values() if len(group) > 1]
    if same and not (lora_keys and full):
        out.append("sweep: some points compose to the same config (points "
                   + "; ".join(compact_indices(g) for g in same) + "); they will train alike")
    return out


def _refusal(failures: list, total: int, stage: str) -> PreflightError:
    lines = []
    shown = 10  # enough to see the pattern; a grid with one bad value repeats it on every row
    for point, message in failures[:shown]:
        indented = message.replace("\n", "\n      ")
        lines.append(f"  point {point.index} ({point.label()}):\n      {indented}")
    if len(failures) > shown:
        rest = compact_indices([p.index for p, _ in failures[shown:]])
        lines.append(f"  ... and {len(failures) - shown} more: points {rest}")
    return PreflightError(
        f"sweep refused: {len(failures)} of {total} point(s) failed the {stage}; nothing was written or submitted\n"
        + "\n".join(lines)
    )


# ---------------------------------------------------------------------------------------- the layout


def shape_of(cfg: Config) -> str:
    """What one job array must share: every sbatch parameter but the name and comment (nodes, GPUs,
    time, partition, setup lines, env, extra options), the requeue limit and the concurrency cap."""
    from launcher.paths import REPO_ROOT
    from launcher.slurm.render import sbatch_parameters

    params = sbatch_parameters(cfg, "RUN_DIR", REPO_ROOT)
    params.pop("job_name", None)
    params.pop("comment", None)
    params["max_requeues"] = cfg.cluster.max_requeues
    params["array_parallelism"] = cfg.cluster.array_parallelism
    return json.dumps(params, sort_keys=True, default=str)


def group_by_shape(points: list) -> list:
    """Points in groups of one resource shape, in order of first appearance."""
    groups: dict = {}
    for point in points:
        groups.setdefault(shape_of(point.cfg), []).append(point)
    return list(groups.values())


def write_sweep_file(sweep_dir: Path, data: dict) -> None:
    path = sweep_dir / SWEEP_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)



# -------------------------------------------------------------------------------------------- entry


def compact_indices(indices: list) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> "0-3, 7, 9-10"."""
    runs: list = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def describe(sweep_name: str, points: list, grid: Grid) -> str:
    lines = [f"# sweep {sweep_name}: {len(points)} point(s); swept: {', '.join(grid.swept_keys) or '(nothing)'}"]
    for point in points:
        lines.append(f"  {point.index:3d}  {point.label()}")
    if points[0].cfg.cluster.kind == "slurm":
        for group in group_by_shape(points):
            c = group[0].cfg.cluster
            what = (f"job array of {len(group)} tasks (points {compact_indices([p.index for p in group])}):"
                    f" --array=0-{len(group) - 1}%{min(len(group), c.array_parallelism)}" if len(group) > 1
                    else f"one job (point {group[0].index}; a group of one is not an array)")
            lines.append(
                f"# {what}, {c.nodes} node(s) x"
                f" {c.nproc_per_node} process(es), {c.gpus_per_node} GPU(s)/node, {c.time_min} min,"
                f" partition {c.partition or '(default)'}"
            )
    return "\n".join(lines)


def plan_sweep(overrides: Sequence[str], name: Optional[str] = None, timings: Optional[dict] = None) -> tuple:
    """Expand and check the whole sweep (nothing written or printed). Returns (sweep name, points, grid); its
    warnings are ``sweep_warnings(grid, points)``."""
    timings = timings if timings is not None else {}
    start = time.perf_counter()
    grid = expand_grid(overrides)
    timings["expand_s"] = time.perf_counter() - start
    sweep_name, points = check_points(grid, name, timings)
    return sweep_name, points, grid


