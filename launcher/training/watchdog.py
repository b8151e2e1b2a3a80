"""The hang watchdog: a thread on every rank that ends a run whose ranks stopped making progress.

Why our own: torch's collectives time out after 30 min (gloo) or NCCL's watchdog aborts only the collective it
sees; neither names the rank that holds everybody up, neither covers a rank stuck outside a collective (a final
save, a data loader, a frozen node), and the job then burns its time limit. Megatron's stack has a hang
detector; nothing we build on does.

Every second each rank's thread writes its progress file (launcher/training/progress.py) and reads the
others'. When a rank's last progress is older than the timeout of the phase it is in (``stall_timeouts``;
``train.stall_timeout_s``), the first rank to notice claims the stall for this attempt (an exclusive file), and:

1. every rank that can still run Python writes its own stack (all threads, ``faulthandler``) to
   ``RUN_DIR/logs/stall-<time>/rank<N>.txt``; for a rank that cannot (frozen: its thread stopped writing too),
   the claiming rank writes what it knows into that rank's file, with ``py-spy dump`` where py-spy is installed
   and the process is on its host; on a GPU, torch's NCCL flight recorder is dumped beside it;
2. the stalled rank(s) and phase go to the run log (every rank's log: an ERROR line), to ``stall.json`` in
   that folder and to ``RUN_DIR/progress/stalls.jsonl`` (``launcher status`` reads them);
3. every rank exits with ``STALL_EXIT_CODE``; a frozen rank on this host is killed. torchrun then restarts the
   ranks (cluster.max_restarts) and they resume from the last complete checkpoint, or the job fails and
   SLURM's requeue path takes over, as for any crashed rank.

Which ranks are named: the ranks whose watchdog thread stopped writing (frozen); if none, the least advanced
of the ranks past their timeout (the lowest step; among those, the ones not waiting in a collective); when
all wait in the same collective, all of them (a collective hang, as NCCL's are).
"""
from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from launcher.paths import LOG_DIR
from launcher.training import progress as prog

log = logging.getLogger("launcher.watchdog")

STALL_EXIT_CODE = 75
"""EX_TEMPFAIL: a temporary failure, to be retried (torchrun restarts the ranks, SLURM requeues the job)."""

DEFAULT_STALL_TIMEOUTS = {
    prog.RENDEZVOUS: 900.0,
    prog.DATA: 0.0,
    prog.MODEL_LOAD: 1800.0,
    prog.ENGINE: 1800.0,
    prog.FORWARD_BACKWARD: 1800.0,
    prog.COLLECTIVE: 1800.0,
    prog.EVAL: 3600.0,
    prog.CHECKPOINT: 3600.0,
    prog.FINAL_SAVE: 3600.0,
    prog.DONE: 0.0,
}
"""Seconds without progress per phase (0: never a stall). A step or a collective longer than 30 min, a
checkpoint or final save longer than an hour is taken for a hang. Data is never timed: tokenizing a large set
(or waiting on the cache lock while another rank does) takes as long as it takes, with progress in the log."""

POLL_S = 1.0
"""How often each rank's thread writes its file and looks at the others' (more rarely in large jobs:
``poll_interval``)."""
FROZEN_AFTER_S = 10.0
"""A rank whose thread has not written for this long is frozen (its whole process stopped), not just waiting."""
DUMP_WAIT_S = 8.0
"""How long the claiming rank waits for the other ranks' own stack files before writing theirs."""


STARTUP_PHASES = (prog.RENDEZVOUS, prog.MODEL_LOAD, prog.ENGINE)
"""Timed by train.startup_stall_timeout_s; the others (but data and done) by train.stall_timeout_s."""


def stall_timeouts(stall_timeout_s: Optional[float], startup_stall_timeout_s: Optional[float] = None) -> dict:
    """phase -> seconds (0: not timed). None: the phase's default; a number: that for every phase it covers;
    train.stall_timeout_s=0 turns the watchdog off altogether."""
    out = {}
    for phase, default in DEFAULT_STALL_TIMEOUTS.items():
        chosen = startup_stall_timeout_s if phase in STARTUP_PHASES else stall_timeout_s
        out[phase] = float(chosen) if chosen is not None and default else default
    if stall_timeout_s == 0:
        return {phase: 0.0 for phase in out}
    return out


def _phase_order(phase: str) -> int:
    return prog.PHASES.index(phase) if phase in prog.PHASES else 0


def find_stalled(records: list, now: float, timeouts: dict, frozen_after_s: float = FROZEN_AFTER_S) -> list:
    """The ranks to name for a stall among ``records`` (one attempt's RankProgress), or [] when there is none.

    Pure: ``now`` and the records' clocks decide."""
    over = [r for r in records if timeouts.get(r.phase, 0) and now - r.progress_at > timeouts[r.phase]]
    if not over:
        return []
    frozen = [r for r in records if r.phase != prog.DONE and now - r.alive_at > frozen_after_s]
    if frozen:
        return sorted(frozen, key=lambda r: r.rank)
    lowest = min(r.step for r in over)
    behind = [r for r in over if r.step == lowest]
    working = [r for r in behind if r.phase != prog.COLLECTIVE]
    return sorted(working or behind, key=lambda r: r.rank)


def describe_stall(stalled: list, now: float) -> str:
    parts = [f"rank {r.rank} ({r.host} pid {r.pid}) in phase '{r.phase}' at step {r.step}, no progress for"
             f" {now - r.progress_at:.0f} s" + (" and unresponsive (frozen)" if now - r.alive_at > FROZEN_AFTER_S else "")
             for r in stalled]
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ the thread


class Watchdog:
    """One per rank: writes this rank's progress, watches everybody's, and reacts to a stall (module docstring)."""

    def __init__(self, run_dir: Path, progress: prog.Progress, timeouts: dict, device_type: str = "cpu",
                 poll_s: Optional[float] = None, watcher: bool = True):
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.timeouts = timeouts
        self.device_type = device_type
        self.poll_s = poll_interval(progress.record.world_size) if poll_s is None else poll_s
        self.watcher = watcher
        """Reads every rank's file (``is_watcher``); the others only write theirs and look for a claim."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="launcher-watchdog", daemon=True)

    @property
    def enabled(self) -> bool:
        return any(self.timeouts.values())

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.progress.write()
        except OSError:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.progress.write()
                if self.enabled:
                    self._check()
            except OSError:  # a run dir on a flaky file system: try again next second
                continue

    def _check(self) -> None:
        me = self.progress.record
        claim = read_claim(self.run_dir, me.attempt)
        if claim is not None:
            self._react(claim, claimed=False)
            return
        if not self.watcher:
            return
        records = [r for r in prog.read_ranks(self.run_dir) if r.attempt == me.attempt]
        now = time.time()
        stalled = find_stalled(records, now, self.timeouts, frozen_after(self.poll_s))
        if not stalled:
            return
        claim = make_claim(self.run_dir, me, stalled, now)
        if claim is not None:
            self._react(claim, claimed=True, records=records)
        else:  # another rank claimed it first
            claim = read_claim(self.run_dir, me.attempt)
            if claim is not None:
                self._react(claim, claimed=False)

    def _react(self, claim: dict, claimed: bool, records: Optional[list] = None) -> None:
        folder = Path(claim["folder"])
        me = self.progress.record
        dump_own_stack(folder, me, claim)
        if self.device_type == "cuda":
            dump_nccl_trace(folder, me.rank)
        if claimed:
            message = (f"stall: {claim['description']}; stacks of every rank in {folder}; exiting (code"
                       f" {STALL_EXIT_CODE}) so the ranks restart from the last complete checkpoint")
            log.error("%s", message)
            print(f"[launcher watchdog] {message}", file=sys.stderr, flush=True)
            deadline = time.time() + DUMP_WAIT_S
            ranks = records or []
            while time.time() < deadline and not all((folder / f"rank{r.rank}.txt").exists() for r in ranks):
                time.sleep(0.2)
            for r in ranks:
                if not (folder / f"rank{r.rank}.txt").exists():
                    write_stack_from_outside(folder, r, claim)
            prog.write_json(folder / "stall.json", claim)
            prog.append_jsonl(prog.progress_dir(self.run_dir) / prog.STALLS_FILE, claim)
            kill_frozen_local_ranks(claim, ranks)
        else:
            log.error("stall (named by rank %s): %s; this rank's stack is in %s; exiting", claim["claimed_by"],
                      claim["description"], folder)
            deadline = time.time() + DUMP_WAIT_S + 5
            while time.time() < deadline and not (folder / "stall.json").exists():
                time.sleep(0.2)
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        sys.stderr.flush()
        os._exit(STALL_EXIT_CODE)


def poll_interval(world_size: int) -> float:
    """Seconds between writes (and reads): 1 s up to 256 ranks, then longer, so that a large job's files do not
    load a shared file system's metadata server (1024 ranks: a write every 4 s per rank)."""
    return max(POLL_S, world_size / 256)


def frozen_after(poll_s: float) -> float:
    return max(FROZEN_AFTER_S, 5 * poll_s)


def is_watcher(rank: int, local_rank: int) -> bool:
    """Who reads every rank's file: the first rank of each node, and rank 1 (so that a one-node job still has a
    watcher when its rank 0 is the one frozen). Everybody else only writes its own file and reacts to a claim."""
    return local_rank == 0 or rank == 1


def start_watchdog(run_dir: Path, rank: int, world_size: int, stall_timeout_s: Optional[float],
                   startup_stall_timeout_s: Optional[float] = None, device_type: str = "cpu") -> Watchdog:
    progress = prog.start_progress(run_dir, rank, world_size)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return Watchdog(run_dir, progress, stall_timeouts(stall_timeout_s, startup_stall_timeout_s), device_type,
                    watcher=is_watcher(rank, local_rank)).start()


# ------------------------------------------------------------------------------------------ the claim


def claim_file(run_dir: Path, attempt: str) -> Path:
    return prog.progress_dir(run_dir) / f"stall-claim.{attempt}.json"


def read_claim(run_dir: Path, attempt: str) -> Optional[dict]:
    import json

    try:
        return json.loads(claim_file(run_dir, attempt).read_text())
    except (OSError, ValueError):
        return None


def make_claim(run_dir: Path, me: prog.RankProgress, stalled: list, now: float) -> Optional[dict]:
    """The stall record, written exclusively: None when another rank claimed this attempt's stall first."""
    import json

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    folder = Path(run_dir) / LOG_DIR / f"stall-{stamp}"
    claim = {
        "attempt": me.attempt, "at": now, "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
        "folder": str(folder), "claimed_by": me.rank,
        "stalled_ranks": [r.rank for r in stalled], "phase": stalled[0].phase,
        "phases": {str(r.rank): r.phase for r in stalled}, "step": min(r.step for r in stalled),
        "description": describe_stall(stalled, now), "ranks": [asdict(r) for r in stalled],
    }
    path = claim_file(run_dir, me.attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(claim) + "\n")
    folder.mkdir(parents=True, exist_ok=True)
    return claim


# ------------------------------------------------------------------------------------------ the dumps


def _header(r: prog.RankProgress, claim: dict) -> str:
    named = "STALLED" if r.rank in claim["stalled_ranks"] else "waiting"
    return (f"rank {r.rank} of {r.world_size} ({named}): host {r.host} pid {r.pid}, phase '{r.phase}', step {r.step},"
            f" last progress {time.strftime('%H:%M:%S', time.localtime(r.progress_at))}; stall of attempt"
            f" {claim['attempt']}: {claim['description']}\n\n")


def dump_own_stack(folder: Path, me: prog.RankProgress, claim: dict) -> None:
    """Every thread of this process, as faulthandler sees it (works while the main thread waits in C++)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".rank{me.rank}.txt.tmp"
    with open(tmp, "w") as fh:
        fh.write(_header(me, claim))
        fh.flush()
        faulthandler.dump_traceback(file=fh, all_threads=True)
    os.replace(tmp, folder / f"rank{me.rank}.txt")


def write_stack_from_outside(folder: Path, r: prog.RankProgress, claim: dict) -> None:
    """A rank that wrote no stack of its own (frozen, or gone): what the claiming rank can tell about it."""
    lines = [_header(r, claim)]
    if r.host != socket.gethostname():
        lines.append(f"No stack: the process is on {r.host}, not on this host ({socket.gethostname()}), and wrote"
                     " none itself (frozen or dead).\n")
    else:
        lines.append(f"Process state: {process_state(r.pid)}.\n")
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            lines.append("No Python stack: the process wrote none itself (frozen), and py-spy is not installed"
                         " (pip install py-spy reads the stack of a frozen process).\n")
        else:
            try:
                done = subprocess.run([py_spy, "dump", "--nonblocking", "--pid", str(r.pid)], capture_output=True,
                                      text=True, timeout=20, check=False)
                lines.append(f"py-spy dump --pid {r.pid}:\n{done.stdout}{done.stderr}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                lines.append(f"py-spy dump failed: {exc}\n")
    (folder / f"rank{r.rank}.txt").write_text("".join(lines))


def process_state(pid: int) -> str:
    try:
        import psutil

        return psutil.Process(pid).status()
    except Exception as exc:  # noqa: BLE001 - gone, or no access: say so
        return f"unknown ({type(exc).__name__})"


def kill_frozen_local_ranks(claim: dict, records: list) -> None:
    """A frozen rank on this host cannot exit by itself: end it, so that torchrun restarts the ranks now rather
    than after its own 30 s grace for a worker that ignores TERM (a stopped process does not even see it)."""
    host = socket.gethostname()
    for r in records:
        if r.rank in claim["stalled_ranks"] and r.host == host and r.pid != os.getpid() \
                and time.time() - r.alive_at > FROZEN_AFTER_S:
            try:
                os.kill(r.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def dump_nccl_trace(folder: Path, rank: int) -> None:
    """torch's NCCL flight recorder (the last collectives each rank issued), where this torch has it."""
    try:
        from torch._C._distributed_c10d import _dump_nccl_trace  # type: ignore[attr-defined]

        (folder / f"rank{rank}.nccl_trace.pkl").write_bytes(_dump_nccl_trace())
    except Exception:  # noqa: BLE001 - no NCCL, no recorder, or recording off: nothing to add
        pass


NCCL_FLIGHT_RECORDER_ENV = {"TORCH_NCCL_TRACE_BUFFER_SIZE": "2000", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}
"""Set for GPU ranks (where not set already): NCCL keeps its last collectives and dumps them on a timeout;
``TORCH_FR_DUMP_TEMP_FILE`` puts the dumps in the run's logs (``nccl_flight_recorder_env``)."""


def nccl_flight_recorder_env(run_dir: Path) -> dict:
    return {**NCCL_FLIGHT_RECORDER_ENV,
            "TORCH_FR_DUMP_TEMP_FILE": str(Path(run_dir) / LOG_DIR / "nccl_flight_recorder_rank")}
