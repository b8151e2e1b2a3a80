"""``launcher status | logs [--follow] | cancel`` for a run dir or a SLURM job id.

A run dir knows its job from ``slurm_job.json``; a job id finds its run dir through the job's comment
(``launcher:RUN_DIR``, set at submit time), from scontrol while SLURM remembers the job, else sacct.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import LauncherError
from launcher.paths import CONFIG_FILE, LOG_DIR, METRICS_FILE
from launcher.slurm.render import SUBMITIT_DIR

JOB_FILE = "slurm_job.json"
TERMINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "REVOKED",
}


@dataclass
class JobRef:
    job_id: str
    run_dir: Optional[Path]


def run_slurm_command(cmd: list) -> subprocess.CompletedProcess:
    """A SLURM client command (squeue, sacct, scontrol, scancel), its output captured; refused in one line where
    SLURM is not installed."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise LauncherError(f"{cmd[0]} is not on PATH: run this on a SLURM login node (export SLURM_CONF for the"
                            " test cluster)") from None


def run_dir_of_job(job_id: str) -> Optional[Path]:
    out = run_slurm_command(["scontrol", "show", "job", "-o", job_id]).stdout
    match = re.search(r"\bComment=launcher:(\S+)", out)
    if not match:
        out = run_slurm_command(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "Comment"]).stdout
        match = re.search(r"launcher:(\S+)", out)
    return Path(match.group(1)) if match else None


def resolve_target(target: str) -> JobRef:
    """A run dir (with slurm_job.json) or a job id -> JobRef; errors say what was expected."""
    path = Path(target)
    if path.is_dir():
        job_file = path / JOB_FILE
        if not job_file.exists():
            raise LauncherError(f"{path}: no {JOB_FILE} here; is it a run dir submitted with cluster=slurm?")
        return JobRef(job_id=str(json.loads(job_file.read_text())["job_id"]), run_dir=path.resolve())
    if re.fullmatch(r"\d+(_\d+)?", target):
        return JobRef(job_id=target, run_dir=run_dir_of_job(target))
    raise LauncherError(f"'{target}' is neither a run dir nor a SLURM job id")


UNKNOWN = "UNKNOWN"


def job_state(job_id: str) -> dict:
    """State and a few facts of the job: the controller's view while it remembers the job (accounting lags
    by a second or two), else accounting's. ``reason`` is SLURM's reason for a pending job (Resources,
    Priority, PartitionNodeLimit, JobHeldUser, ...), else ""."""
    out = run_slurm_command(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%M|%N|%r"]).stdout.strip()
    acct = run_slurm_command(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,Elapsed,NodeList,ExitCode,Reason"]).stdout
    acct_lines = [line for line in acct.splitlines() if line.strip()]
    acct_state, acct_elapsed, acct_nodes, exit_code, acct_reason = (
        (acct_lines[-1].split("|") + [""] * 5)[:5] if acct_lines else ("", "", "", "", ""))
    if out:
        state, elapsed, nodes, reason = (out.splitlines()[0].split("|") + ["", "", ""])[:4]
        detail = acct_state if acct_state.split()[:1] == [state] else state
        return {"state": state, "detail": detail, "elapsed": elapsed, "nodes": nodes,
                "exit_code": exit_code if acct_state.split()[:1] == [state] else "",
                "reason": reason if state == "PENDING" else ""}
    if acct_lines:
        state = acct_state.split()[0] if acct_state else UNKNOWN
        return {"state": state, "detail": acct_state, "elapsed": acct_elapsed, "nodes": acct_nodes,
                "exit_code": exit_code, "reason": acct_reason if state == "PENDING" else ""}
    return {"state": UNKNOWN, "detail": "not known to squeue or sacct", "elapsed": "", "nodes": "", "exit_code": "",
            "reason": ""}


def known_job_state(ref: JobRef) -> dict:
    """``job_state``, refusing a job SLURM does not know (a mistyped id, or one older than accounting keeps)."""
    info = job_state(ref.job_id)
    if info["state"] == UNKNOWN:
        where = f" (run dir {ref.run_dir})" if ref.run_dir else ""
        raise LauncherError(f"job {ref.job_id}: no such job; neither squeue nor sacct knows it{where}")
    return info


def describe_state(info: dict) -> str:
    """``PENDING (reason: Resources)``, ``RUNNING``, ``FAILED``..."""
    if info["state"] == "PENDING":
        return f"{info['detail']} (reason: {info.get('reason') or 'not given'})"
    return info["detail"]


def _last_metrics(run_dir: Optional[Path]) -> Optional[str]:
    if run_dir is None or not (run_dir / METRICS_FILE).exists():
        return None
    lines = (run_dir / METRICS_FILE).read_text().strip().splitlines()
    return lines[-1] if lines else None


def node_of_log(path: Path) -> int:
    """The node (task) number of ``<job>_<node>_log.out``; the job id itself may be ``<array>_<index>``."""
    return int(path.name.rsplit("_log.", 1)[0].rsplit("_", 1)[1])


def node_log_files(ref: JobRef) -> list:
    """Per-node stdout/stderr that submitit's srun writes (``<job>_<node>_log.out|err``), in node order."""
    if ref.run_dir is None:
        return []
    folder = ref.run_dir / SUBMITIT_DIR
    files = sorted(folder.glob(f"{ref.job_id}_*_log.out")) + sorted(folder.glob(f"{ref.job_id}_*_log.err"))
    return sorted(files, key=lambda p: (node_of_log(p), p.suffix != ".out"))


def rank_log_files(ref: JobRef) -> list:
    if ref.run_dir is None:
        return []
    return sorted((ref.run_dir / LOG_DIR).glob("node*/*/attempt_*/*/std*.log"))


def _parser(prog: str, help_text: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=help_text)
    parser.add_argument("target", help="a run dir (with slurm_job.json) or a SLURM job id")
    return parser


def status_main(argv: Optional[list] = None) -> int:
    args = _parser("launcher status", "State of a run: its SLURM job, and every rank's phase, progress, stalls"
                   " and restarts.").parse_args(argv)
    path = Path(args.target)
    if path.is_dir() and not (path / JOB_FILE).exists() and (path / CONFIG_FILE).exists():
        # A local run: no job, but its ranks' progress.
        print(f"run {path.resolve()} (local)")
        _print_health(path)
        return 0
    ref = resolve_target(args.target)
    info = known_job_state(ref)
    print(f"job {ref.job_id}: {describe_state(info)}")
    for key in ("elapsed", "nodes", "exit_code"):
        if info.get(key):
            print(f"  {key}: {info[key]}")
    print(f"  run dir: {ref.run_dir or '(unknown: the job has no launcher comment)'}")
    metrics = _last_metrics(ref.run_dir)
    if metrics:
        print(f"  last metrics: {metrics}")
    if ref.run_dir is not None:
        _print_health(ref.run_dir)
    if ref.run_dir is not None:
        print(f"  logs: launcher logs {ref.run_dir}")
    return 0


def _print_health(run_dir: Path) -> None:
    from launcher.training.progress import health_lines, run_health

    for line in health_lines(run_health(run_dir)):
        print(line)


def _print_new(path: Path, offsets: dict, prefix: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.seek(offsets.get(path, 0))
            data = fh.read()
    except FileNotFoundError:
        return
    # Print whole lines only; a partial last line is printed once it is complete.
    complete = data[: data.rfind(b"\n") + 1]
    offsets[path] = offsets.get(path, 0) + len(complete)
    for line in complete.decode("utf-8", "replace").splitlines():
        print(f"{prefix}{line}", flush=True)


def logs_main(argv: Optional[list] = None) -> int:
    parser = _parser("launcher logs", "Per-node logs of a SLURM run (every rank's lines, prefixed).")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    ref = resolve_target(args.target)
    info = known_job_state(ref)
    if ref.run_dir is None:
        raise LauncherError(f"job {ref.job_id}: no run dir known for it (not submitted by launcher?)")
    offsets: dict = {}

    def dump() -> None:
        for path in node_log_files(ref):
            node = node_of_log(path)
            _print_new(path, offsets, f"[node{node}{' err' if path.suffix == '.err' else ''}] ")

    said = None
    if info["state"] == "PENDING":
        # Say why nothing is printed yet, and again whenever the reason changes.
        said = describe_state(info)
        print(f"[launcher] job {ref.job_id} is {said}; no logs until it starts"
              + ("; waiting" if args.follow else ""), flush=True)
    dump()
    while args.follow:
        info = job_state(ref.job_id)
        state = info["state"]
        if state == "PENDING" and describe_state(info) != said:
            said = describe_state(info)
            print(f"[launcher] job {ref.job_id} is {said}; waiting", flush=True)
        time.sleep(args.interval)
        dump()
        if state in TERMINAL_STATES:
            print(f"[launcher] job {ref.job_id} ended: {state}", flush=True)
            break
    if not args.follow:
        ranks = rank_log_files(ref)
        if ranks:
            print(f"[launcher] per-rank logs: {ref.run_dir / LOG_DIR}/node*/*/attempt_*/<local rank>/", flush=True)
    return 0


def cancel_main(argv: Optional[list] = None) -> int:
    args = _parser("launcher cancel", "Cancel a SLURM run.").parse_args(argv)
    ref = resolve_target(args.target)
    info = known_job_state(ref)  # scancel says nothing, and exits 0, for a job id that does not exist
    if info["state"] in TERMINAL_STATES:
        print(f"job {ref.job_id} already ended ({info['detail']}); nothing to cancel")
        return 0
    done = run_slurm_command(["scancel", ref.job_id])
    if done.returncode != 0:
        print(f"scancel {ref.job_id} failed: {done.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"cancelled job {ref.job_id}" + (f" (run dir {ref.run_dir})" if ref.run_dir else ""))
    return 0
