"""``launcher train -m OVERRIDES...``: a Hydra grid sweep, checked as a whole, then queued or run here.

1. Expand: Hydra's own override parser and the BasicSweeper's cartesian product (``a=1,2``, ``range(...)``,
   ``choice(...)``, ``glob(...)`` over a config group such as ``method=glob(*)``).
2. Check: compose, validate and preflight EVERY point before anything is written or queued; one bad point
   refuses the whole sweep, naming the point's overrides.
3. Lay out: ``<output_root>/sweeps/<name>/<date>/<time>/`` with ``sweep.json`` and one run dir per point.
4. Launch: on SLURM, one job array per distinct resource shape (``--array=0-N%cluster.array_parallelism``),
   returning as soon as queued (a dropped SSH session loses nothing); here, points one after another, or
   ``--parallel N`` at a time.

``launcher sweep report SWEEP_DIR`` (launcher.sweep_report) reads what this writes.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as _dt
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from launcher.config.schema import Config
from launcher.errors import ConfigError, PreflightError

SWEEP_FILE = "sweep.json"
SWEEPS_SUBDIR = "sweeps"
LOCAL_RESULT = "local_result.json"
"""Written into a point's run dir when a local sweep has run it: {"returncode", "started_at", "ended_at"}."""
LOCAL_LOG = "run.log"
"""stdout and stderr of a locally run point."""
MULTIRUN_FLAGS = ("-m", "--multirun")


# ------------------------------------------------------------------------------------------- expansion


@dataclass
class Grid:
    """The expanded sweep: every point's overrides (in the user's order) and which keys vary."""

    points: list
    """One list of override strings per point, e.g. ["method=lora", "method.lr=0.001", "method.lora.r=4"]."""
    swept_keys: list
    """Keys with more than one value, in the order given."""

    def swept_values(self, point: Sequence[str]) -> dict:
        """{key: value-as-text} of the swept keys of one point."""
        values = dict(o.split("=", 1) for o in point if "=" in o)
        return {k: values[k] for k in self.swept_keys if k in values}


def _parse(overrides: Sequence[str], config_loader):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from launcher.config.compose import _one_line

    parser = OverridesParser.create(config_loader=config_loader)
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as exc:
            raise ConfigError(f"sweep: cannot parse override '{text}': {_one_line(exc)}") from None
    return parsed


def expand_grid(overrides: Sequence[str]) -> Grid:
    """The cartesian product of every sweep override, as Hydra's BasicSweeper builds it.

    A key given twice keeps its last value (as in Hydra). Interval sweeps (``interval(0,1)``) cannot be
    enumerated and are refused; a glob that matches no option of its group is refused.
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from launcher.config.compose import _one_line, conf_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            # The config loader lists a group's options, which glob(...) filters.
            parsed = _parse(overrides, GlobalHydra.instance().config_loader())
            per_key: dict = {}
            for override in parsed:
                key = override.get_key_element()
                if override.is_sweep_override():
                    if not override.is_discrete_sweep():
                        raise ConfigError(
                            f"sweep: '{override.input_line}' is an interval sweep, which a grid cannot enumerate;"
                            " list the values (a=1,2,3) or use range(start,stop,step)"
                        )
                    try:
                        values = list(override.sweep_string_iterator())
                    except HydraException as exc:
                        raise ConfigError(f"sweep: '{override.input_line}': {_one_line(exc)}") from None
                    if not values:
                        raise ConfigError(
                            f"sweep: '{override.input_line}' gives no value"
                            + (" (the glob matches no option of that config group)"
                               if "glob" in (override.input_line or "") else "")
                        )
                    per_key[key] = [f"{key}={v}" for v in values]
                else:
                    per_key[key] = [override.input_line]
    finally:
        GlobalHydra.instance().clear()
    points = [list(p) for p in itertools.product(*per_key.values())]
    swept = [k for k, options in per_key.items() if len(options) > 1]
    return Grid(points=points, swept_keys=swept)


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

    from launcher.config.compose import _as_value_override, _one_line, conf_dir, config_groups

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
                hydra_form = [_as_value_override(o, groups) for o in overrides]
                values = [o for o, h in zip(overrides, hydra_form) if h == "++" + o] if apply_overrides else []
                structural = tuple(h for o, h in zip(overrides, hydra_form) if o not in values)
                try:
                    if structural not in bases:
                        bases[structural] = compose(config_name="train", overrides=list(structural))
                    cfg = copy.deepcopy(bases[structural])
                    if values:
                        apply_overrides(parser.parse_overrides(["++" + v for v in values]), cfg)
                    data = OmegaConf.to_container(cfg, resolve=True)
                except (HydraException, OmegaConfBaseException) as exc:
                    results.append(f"config: {_one_line(exc)}")
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
    from launcher.preflight import run_preflight

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
    from launcher.slurm.node import REPO_ROOT
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


def lay_out(sweep_name: str, points: list, grid: Grid, argv: Sequence[str]) -> tuple:
    """Create the sweep dir and every point's run dir (config.yaml, overrides.txt, code version)."""
    from launcher.config.compose import REPO_ROOT
    from launcher.rundir import make_run_dir, write_code_version, write_overrides, write_run_config

    root = Path(points[0].cfg.run.output_root)
    sweep_dir = make_run_dir(root / SWEEPS_SUBDIR, sweep_name)
    write_code_version(sweep_dir, REPO_ROOT)  # once: git is slow, and every point runs the same code
    code_files = [p for p in (sweep_dir / "code_version.txt", sweep_dir / "code.diff") if p.exists()]
    for point in points:
        point.run_dir = sweep_dir / point_dir_name(point.index, point.swept)
        point.run_dir.mkdir()
        write_run_config(point.run_dir, point.cfg)
        write_overrides(point.run_dir, point.overrides)
        for src in code_files:
            shutil.copyfile(src, point.run_dir / src.name)
    data = {
        "name": sweep_name,
        "created_at": _dt.datetime.now().isoformat(timespec="seconds"),
        "sweep_dir": str(sweep_dir),
        "cluster": points[0].cfg.cluster.kind,
        "argv": list(argv),
        "swept_keys": grid.swept_keys,
        "arrays": [],
        "points": [p.record(sweep_dir) for p in points],
    }
    write_sweep_file(sweep_dir, data)
    return sweep_dir, data


# ------------------------------------------------------------------------------------------ SLURM


def submit_sweep(sweep_dir: Path, data: dict, points: list, worker_module: Optional[str] = None) -> list:
    """One job array per resource shape; sweep.json is rewritten after each so it always says what is queued."""
    from launcher.slurm.submit import submit_array

    from launcher.errors import LauncherError

    arrays = []
    for group in group_by_shape(points):
        kwargs = {"worker_module": worker_module} if worker_module else {}
        try:
            info = submit_array([p.cfg for p in group], [p.run_dir for p in group], sweep_dir,
                                job_name=data["name"], **kwargs)
        except LauncherError:
            raise
        except Exception as exc:  # sbatch said no (a limit, a partition); say what is queued already
            queued = ", ".join(a["array_job_id"] for a in arrays)
            raise LauncherError(
                f"sbatch refused the job array of points {', '.join(str(p.index) for p in group)}:"
                f" {' '.join(str(exc).split())[-500:]}\n"
                + (f"already queued: job array(s) {queued} (scancel {queued.replace(',', ' ')} to drop them);"
                   if queued else "nothing of this sweep was queued;")
                + f" sweep dir {sweep_dir}"
            ) from None
        for task, point in enumerate(group):
            point.array_job_id = info["array_job_id"]
            point.array_task = task
            point.job_id = info["task_job_ids"][task]
        first = group[0].cfg.cluster
        arrays.append({
            "array_job_id": info["array_job_id"],
            "tasks": len(group),
            "points": [p.index for p in group],
            "parallelism": min(len(group), first.array_parallelism),
            "nodes": first.nodes,
            "nproc_per_node": first.nproc_per_node,
            "gpus_per_node": first.gpus_per_node,
            "time_min": first.time_min,
            "partition": first.partition,
            "script": info["script"],
        })
        data["arrays"] = arrays
        data["points"] = [p.record(sweep_dir) for p in points]
        write_sweep_file(sweep_dir, data)
    return arrays


# ------------------------------------------------------------------------------------------ local


def local_command(cfg: Config, run_dir: Path) -> list:
    from launcher.launch_local import torchrun_command

    if cfg.cluster.nproc_per_node == 1:
        return [sys.executable, "-m", "recipes.run", "--run-dir", str(run_dir)]
    return torchrun_command(cfg, run_dir)


def run_local_sweep(points: list, parallel: int = 1, poll_s: float = 0.5) -> int:
    """Run the points here, ``parallel`` at a time, each in its own process (a failing point does not stop
    the others); each point's output goes to RUN_DIR/run.log. Returns 0 when every point succeeded."""
    pending = list(points)
    running: dict = {}
    failed = 0
    try:
        failed = _run_points(pending, running, parallel, poll_s)
    except KeyboardInterrupt:
        for point, proc, log, _ in running.values():
            proc.terminate()
            proc.wait()
            log.close()
            print(f"[sweep] point {point.index} interrupted; log {point.run_dir / LOCAL_LOG}", file=sys.stderr)
        raise
    return 0 if failed == 0 else 1


def _run_points(pending: list, running: dict, parallel: int, poll_s: float) -> int:
    from launcher.config.compose import REPO_ROOT
    from launcher.rundir import child_env

    failed = 0
    while pending or running:
        while pending and len(running) < max(1, parallel):
            point = pending.pop(0)
            env = child_env(point.cfg.cluster.env)
            env.setdefault("OMP_NUM_THREADS", "1")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
            log = open(point.run_dir / LOCAL_LOG, "wb")
            proc = subprocess.Popen(local_command(point.cfg, point.run_dir), cwd=str(REPO_ROOT), env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            running[point.index] = (point, proc, log, _dt.datetime.now())
            print(f"[sweep] point {point.index} started ({point.label()}): {point.run_dir}", flush=True)
        time.sleep(poll_s)
        for index, (point, proc, log, started) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            log.close()
            del running[index]
            ended = _dt.datetime.now()
            (point.run_dir / LOCAL_RESULT).write_text(json.dumps({
                "returncode": rc, "started_at": started.isoformat(timespec="seconds"),
                "ended_at": ended.isoformat(timespec="seconds"),
            }) + "\n")
            failed += rc != 0
            verdict = "done" if rc == 0 else f"FAILED (exit code {rc}; log {point.run_dir / LOCAL_LOG})"
            print(f"[sweep] point {point.index} {verdict} in {(ended - started).total_seconds():.0f} s", flush=True)
    return failed


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
    """Expand and check the whole sweep (nothing written). Returns (sweep name, points, grid)."""
    timings = timings if timings is not None else {}
    start = time.perf_counter()
    grid = expand_grid(overrides)
    timings["expand_s"] = time.perf_counter() - start
    sweep_name, points = check_points(grid, name, timings)
    for warning in sweep_warnings(grid, points):
        print(f"warning: {warning}", file=sys.stderr)
    return sweep_name, points, grid


def launch_sweep(overrides: Sequence[str], name: Optional[str] = None, parallel: int = 1,
                 timings: Optional[dict] = None, worker_module: Optional[str] = None, quiet: bool = False) -> dict:
    """Plan, lay out, then submit (SLURM) or run (local). Returns {"sweep_dir", "arrays", "points", "rc"}."""
    timings = timings if timings is not None else {}
    sweep_name, points, grid = plan_sweep(overrides, name, timings)
    _print_warnings(points)
    _note_parallel(parallel, points)
    start = time.perf_counter()
    sweep_dir, data = lay_out(sweep_name, points, grid, overrides)
    timings["write_s"] = time.perf_counter() - start
    if not quiet:
        print(describe(sweep_name, points, grid), flush=True)
        print(f"sweep dir: {sweep_dir}", flush=True)
    if points[0].cfg.cluster.kind == "local":
        rc = run_local_sweep(points, parallel)
        if not quiet:
            print(f"report: launcher sweep report {sweep_dir}", flush=True)
        return {"sweep_dir": sweep_dir, "arrays": [], "points": points, "rc": rc}
    start = time.perf_counter()
    arrays = submit_sweep(sweep_dir, data, points, worker_module)
    timings["submit_s"] = time.perf_counter() - start
    if not quiet:
        for array in arrays:
            if array["tasks"] == 1:
                print(f"Submitted job {array['array_job_id']}: point {array['points'][0]}")
                continue
            print(f"Submitted job array {array['array_job_id']}: {array['tasks']} tasks (points"
                  f" {compact_indices(array['points'])}), at most {array['parallelism']} running at once"
                  " (cluster.array_parallelism)")
        ids = ",".join(a["array_job_id"] for a in arrays)
        print(f"  sweep dir: {sweep_dir}")
        print(f"  report:    launcher sweep report {sweep_dir}    (works while it runs)")
        print(f"  queue:     squeue -r -j {ids}    cancel: scancel {ids.replace(',', ' ')}")
        print(f"  one point: launcher status|logs {sweep_dir}/<point dir>")
    return {"sweep_dir": sweep_dir, "arrays": arrays, "points": points, "rc": 0}


def _print_warnings(points: list) -> None:
    seen: dict = {}
    for point in points:
        for warning in point.warnings:
            seen.setdefault(warning, []).append(point.index)
    for warning, indices in seen.items():
        where = "every point" if len(indices) == len(points) else f"point(s) {', '.join(map(str, indices))}"
        print(f"warning ({where}): {warning}", file=sys.stderr)


def sweep_main(argv: list) -> int:
    """``launcher train -m|--multirun OVERRIDES... [--name NAME] [--dry-run] [--parallel N]``."""
    parser = argparse.ArgumentParser(
        prog="launcher train -m",
        description="A grid sweep: every combination of the comma lists / range() / choice() / glob() overrides.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; a=1,2 or range(1,4) or choice(x,y) sweep")
    parser.add_argument("-m", "--multirun", action="store_true", help="(accepted: this is the sweep entry point)")
    parser.add_argument("--dry-run", action="store_true", help="expand and check every point; launch nothing")
    parser.add_argument("--name", default=None, help="sweep name (default: <model>-<method>-<data>)")
    parser.add_argument("--parallel", type=int, default=1, help="cluster=local: points run at the same time")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    if args.dry_run:
        sweep_name, points, grid = plan_sweep(args.overrides, args.name)
        _note_parallel(args.parallel, points)
        _print_warnings(points)
        print(describe(sweep_name, points, grid))
        print("# preflight passed for every point; dry run: nothing was written or launched")
        return 0
    return launch_sweep(args.overrides, args.name, args.parallel)["rc"]


def _note_parallel(parallel: int, points: list) -> None:
    if parallel > 1 and points[0].cfg.cluster.kind == "slurm":
        print("note: --parallel is for cluster=local; on SLURM, cluster.array_parallelism caps the running tasks",
              file=sys.stderr)
