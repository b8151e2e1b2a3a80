"""Launch a planned sweep: lay out the sweep dir (a run dir per point, one code snapshot), then on SLURM
one job array per distinct resource shape (``--array=0-N%cluster.array_parallelism``), returning as soon as
queued (a dropped SSH session loses nothing); here, points one after another, or ``--parallel N`` at a time.
``launch_run`` calls ``start_sweep`` for a planned sweep.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from launcher.config.schema import Config, recipe_module
from launcher.sweep.expand import Grid
from launcher.sweep.plan import (LOCAL_LOG, LOCAL_RESULT, SWEEPS_SUBDIR, compact_indices, group_by_shape,
                                 point_dir_name, write_sweep_file)


# ------------------------------------------------------------------------------------------ lay-out


def lay_out(sweep_name: str, points: list, grid: Grid, argv: Sequence[str]) -> tuple:
    """Create the sweep dir and every point's run dir (config.yaml, overrides.txt, code version)."""
    from launcher.paths import REPO_ROOT
    from launcher.launch.rundir import make_run_dir, snapshot_code, write_code_version, write_overrides, write_run_config

    root = Path(points[0].cfg.run.output_root)
    sweep_dir = make_run_dir(root / SWEEPS_SUBDIR, sweep_name)
    write_code_version(sweep_dir, REPO_ROOT)  # once: git is slow, and every point runs the same code
    snapshot_code(sweep_dir)  # likewise: one copy of the code for all points (SWEEP_DIR/code)
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
    from launcher.launch.slurm_submit import submit_array

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
    from launcher.launch.local import torchrun_command

    if cfg.cluster.nproc_per_node == 1:
        return [sys.executable, "-m", recipe_module(cfg), "--run-dir", str(run_dir)]
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
    from launcher.launch.local import omp_threads_per_rank
    from launcher.paths import CODE_SNAPSHOT_DIR, REPO_ROOT
    from launcher.launch.rundir import child_env

    failed = 0
    while pending or running:
        while pending and len(running) < max(1, parallel):
            point = pending.pop(0)
            env = child_env(point.cfg.cluster.env)
            env.setdefault("OMP_NUM_THREADS", str(omp_threads_per_rank(point.cfg.cluster.nproc_per_node, parallel)))
            # A point may wait long in this queue: it runs the sweep's code snapshot (SWEEP_DIR/code), taken
            # when the sweep was laid out; cwd too, as `python -m` puts the cwd first on sys.path.
            code_dir = point.run_dir.parent / CODE_SNAPSHOT_DIR
            if not code_dir.is_dir():  # points laid out by an older launcher
                code_dir = REPO_ROOT
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), env.get("PYTHONPATH")) if p)
            log = open(point.run_dir / LOCAL_LOG, "wb")
            proc = subprocess.Popen(local_command(point.cfg, point.run_dir), cwd=str(code_dir), env=env,
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


def start_sweep(plan, *, detach: bool = False, quiet: bool = False, worker_module: Optional[str] = None,
                timings: Optional[dict] = None):
    """Lay out the planned sweep, then submit its job arrays (SLURM) or run its points here (``plan.parallel``
    at a time; detach=True: one after another in a process of their own). Returns a ``Launched``."""
    from launcher.launch.run import Launched

    timings = timings if timings is not None else {}
    points, grid = plan.sweep.points, plan.sweep.grid
    start = time.perf_counter()
    sweep_dir, data = lay_out(plan.name, points, grid, plan.overrides)
    timings["write_s"] = time.perf_counter() - start
    if not quiet:
        print(plan.would_run, flush=True)
        print(f"sweep dir: {sweep_dir}", flush=True)
    if plan.cfg.cluster.kind == "local":
        if detach:
            from launcher.launch.detached import start_detached

            return Launched(sweep_dir, pid=start_detached(["--sweep-dir", str(sweep_dir)], sweep_dir))
        rc = run_local_sweep(points, plan.parallel)
        if not quiet:
            print(f"report: launcher sweep report {sweep_dir}", flush=True)
        return Launched(sweep_dir, rc=rc)
    start = time.perf_counter()
    arrays = submit_sweep(sweep_dir, data, points, worker_module)
    timings["submit_s"] = time.perf_counter() - start
    ids = ",".join(a["array_job_id"] for a in arrays)
    if not quiet:
        for array in arrays:
            if array["tasks"] == 1:
                print(f"Submitted job {array['array_job_id']}: point {array['points'][0]}")
                continue
            print(f"Submitted job array {array['array_job_id']}: {array['tasks']} tasks (points"
                  f" {compact_indices(array['points'])}), at most {array['parallelism']} running at once"
                  " (cluster.array_parallelism)")
        print(f"  sweep dir: {sweep_dir}")
        print(f"  report:    launcher sweep report {sweep_dir}    (works while it runs)")
        print(f"  queue:     squeue -r -j {ids}    cancel: scancel {ids.replace(',', ' ')}")
        print(f"  one point: launcher status|logs {sweep_dir}/<point dir>")
    return Launched(sweep_dir, job_id=ids, arrays=arrays)


def launch_sweep(overrides: Sequence[str], name: Optional[str] = None, parallel: int = 1,
                 timings: Optional[dict] = None, worker_module: Optional[str] = None, quiet: bool = False) -> dict:
    """``launcher train -m OVERRIDES`` as a function: ``plan_run`` then ``launch_run``, warnings to stderr.
    Returns {"sweep_dir", "arrays", "points", "rc"}."""
    from launcher.launch.plan import plan_run, print_messages
    from launcher.launch.run import launch_run

    plan = plan_run(overrides, name, sweep=True, parallel=parallel, timings=timings)
    print_messages(plan)
    launched = launch_run(plan, quiet=quiet, worker_module=worker_module, timings=timings)
    return {"sweep_dir": launched.run_dir, "arrays": launched.arrays, "points": plan.sweep.points, "rc": launched.rc}
