"""A local run (or local sweep) in its own session, outliving whoever started it (``launch_run(detach=True)``).

``launcher train cluster=local`` runs in the terminal that started it; the UI must return at once and may be
restarted while the run trains, so it starts this module detached (a new session, no inherited pipes):

    python -m launcher.launch.detached --run-dir RUN_DIR      one run: its ranks' command from sweep_launch
    python -m launcher.launch.detached --sweep-dir SWEEP_DIR  every point, one after another (run_local_sweep)

It leaves what the Runs tab reads: ``local_job.json`` (written by the starting UI: this process's pid and start
time, so a recycled pid is never taken for it), the run's output in ``run.log`` and, at the end, ``local_result.json`` (return code), the
same two files a local sweep writes for each point (launcher.sweep.LOCAL_LOG, LOCAL_RESULT).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

_started: list = []
"""Jobs this process started: polled so that an ended one does not linger as a zombie (which looks alive)."""

JOB_FILE = "local_job.json"
CANCEL_FILE = "local_cancelled.json"
"""Written by ``stop``: the job ended because the UI cancelled it (not a crash)."""


def start_detached(args: list, folder: Path) -> int:
    """Start this module with ``args`` in a new session; its early output goes to FOLDER/local_job.log."""
    from launcher.paths import REPO_ROOT
    from launcher.launch.rundir import child_env

    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    with open(Path(folder) / "local_job.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.launch.detached", *args], cwd=str(REPO_ROOT),
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    write_job_file(Path(folder), proc.pid)  # here, not in the child: the run shows as running at once
    _started.append(proc)
    return proc.pid


def process_start_time(pid: int) -> Optional[float]:
    """When the process started; None when there is no such process, or only its zombie."""
    import psutil

    for proc in list(_started):
        if proc.poll() is not None:
            _started.remove(proc)
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def write_job_file(folder: Path, pid: int) -> None:
    record = {"pid": pid, "create_time": process_start_time(pid),
              "started_at": _dt.datetime.now().isoformat(timespec="seconds")}
    tmp = folder / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, folder / JOB_FILE)


def job_alive(folder: Path) -> Optional[bool]:
    """True: the job process of FOLDER runs; False: it ended (or was killed); None: no job file here."""
    try:
        record = json.loads((Path(folder) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    started = process_start_time(int(record["pid"]))
    return started is not None and (record.get("create_time") is None or abs(started - record["create_time"]) < 1)


def stop(folder: Path) -> bool:
    """SIGTERM to the job's whole process group (the job and its ranks); False when it is not running."""
    if not job_alive(folder):
        return False
    pid = int(json.loads((Path(folder) / JOB_FILE).read_text())["pid"])
    (Path(folder) / CANCEL_FILE).write_text(json.dumps({"at": _dt.datetime.now().isoformat(timespec="seconds")}))
    try:
        os.killpg(pid, signal.SIGTERM)  # start_new_session: the job leads its own group
    except ProcessLookupError:
        return False
    return True


def run_one(run_dir: Path) -> int:
    from launcher.config.schema import load_run_config
    from launcher.launch.sweep_launch import run_local_sweep
    from launcher.sweep.plan import LOCAL_LOG, LOCAL_RESULT, SweepPoint

    point = SweepPoint(index=0, overrides=[], swept={}, cfg=load_run_config(run_dir), run_dir=run_dir)
    rc = run_local_sweep([point], parallel=1)
    assert (run_dir / LOCAL_RESULT).exists() and (run_dir / LOCAL_LOG).exists()
    return rc


def run_sweep(sweep_dir: Path) -> int:
    from launcher.config.schema import load_run_config
    from launcher.launch.sweep_launch import run_local_sweep
    from launcher.sweep.plan import SWEEP_FILE, SweepPoint

    data = json.loads((sweep_dir / SWEEP_FILE).read_text())
    points = []
    for p in data["points"]:
        run_dir = sweep_dir / p["run_dir"]
        points.append(SweepPoint(index=p["index"], overrides=p["overrides"], swept=p["swept"],
                                 cfg=load_run_config(run_dir), run_dir=run_dir))
    return run_local_sweep(points, parallel=1)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.launch.detached")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run-dir", type=Path)
    target.add_argument("--sweep-dir", type=Path)
    args = parser.parse_args(argv)
    folder = (args.run_dir or args.sweep_dir).resolve()

    def on_term(signum, frame):  # cancel: run_local_sweep's KeyboardInterrupt path stops the ranks
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run_one(folder) if args.run_dir else run_sweep(folder)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
