"""Where each rank is: its phase and step, in a small JSON file per rank in the run dir. Read by the hang
watchdog (launcher/training/watchdog.py), ``launcher status`` and the UI (``run_health``).

Reporting progress costs an attribute write (``report(phase, step)``, from anywhere on the rank: the recipe,
the trainer, the engines); the rank's watchdog thread writes the file once a second. So the file carries two
clocks: ``progress_at``, when the rank last reported progress, and ``alive_at``, when its watchdog thread last
wrote. A rank blocked in a collective keeps writing (the wait releases the GIL) with an old ``progress_at``; a
frozen process (SIGSTOP, a C call holding the GIL, a dead node) stops writing altogether.

Files: ``RUN_DIR/progress/rank<N>.json``; ``stalls.jsonl`` (one record per stall the watchdog acted on) and
``attempts.jsonl`` (one record per start of the ranks: first start, torchrun restart, SLURM requeue) beside them.
Clocks are wall clocks (``time.time()``): ranks on different hosts compare them, which assumes clocks agree to
well under the stall timeouts (NTP does; timeouts are seconds in tests, minutes by default).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from launcher.engines.reshard import RESHARDS_FILE, reshard_line

PROGRESS_DIR = "progress"
STALLS_FILE = "stalls.jsonl"
ATTEMPTS_FILE = "attempts.jsonl"

# The phases a rank reports, in the order a run goes through them (``least_advanced`` uses the order).
RENDEZVOUS = "rendezvous"
DATA = "data"
MODEL_LOAD = "model load"
ENGINE = "engine"
FORWARD_BACKWARD = "forward/backward"
COLLECTIVE = "collective"
EVAL = "eval"
CHECKPOINT = "checkpoint"
FINAL_SAVE = "final save"
DONE = "done"
PHASES = (RENDEZVOUS, DATA, MODEL_LOAD, ENGINE, FORWARD_BACKWARD, COLLECTIVE, EVAL, CHECKPOINT, FINAL_SAVE, DONE)


def progress_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PROGRESS_DIR


def rank_file(run_dir: Path, rank: int) -> Path:
    return progress_dir(run_dir) / f"rank{rank}.json"


def attempt_id(environ=None) -> str:
    """Which start of the ranks this is: the SLURM job and its requeue count, and torchrun's restart round (a
    stall is acted on once per attempt; records of an earlier attempt are history)."""
    env = os.environ if environ is None else environ
    return (f"{env.get('SLURM_JOB_ID', 'local')}.{env.get('SLURM_RESTART_COUNT', '0')}"
            f".{env.get('TORCHELASTIC_RESTART_COUNT', '0')}")


@dataclass
class RankProgress:
    """One rank's progress file."""
    rank: int
    world_size: int
    pid: int
    host: str
    attempt: str
    phase: str = RENDEZVOUS
    step: int = 0
    progress_at: float = field(default_factory=time.time)
    """Wall clock of the last reported progress (a phase change or a finished step)."""
    alive_at: float = field(default_factory=time.time)
    """Wall clock of the last write by the rank's watchdog thread."""

    @classmethod
    def from_dict(cls, record: dict) -> "RankProgress":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in record.items() if k in names})


class Progress:
    """This rank's progress (one per process; ``report`` reaches it from anywhere)."""

    def __init__(self, run_dir: Path, rank: int, world_size: int, environ=None):
        self.run_dir = Path(run_dir)
        self.record = RankProgress(rank=rank, world_size=world_size, pid=os.getpid(), host=socket.gethostname(),
                                   attempt=attempt_id(environ))

    def report(self, phase: str, step: Optional[int] = None) -> None:
        """Progress: a new phase, or (with ``step``) a step done. Only attributes change; the thread writes."""
        record = self.record
        record.phase = phase
        if step is not None:
            record.step = step
        record.progress_at = time.time()

    def write(self) -> None:
        """The watchdog thread, once a second: this rank's file, replaced atomically."""
        self.record.alive_at = time.time()
        write_json(rank_file(self.run_dir, self.record.rank), asdict(self.record))


_current: Optional[Progress] = None


def start_progress(run_dir: Path, rank: int, world_size: int) -> Progress:
    global _current
    _current = Progress(run_dir, rank, world_size)
    _current.write()
    return _current


def report(phase: str, step: Optional[int] = None) -> None:
    """Say where this rank is; nothing happens where no progress file is kept (tests that build a Trainer)."""
    if _current is not None:
        _current.report(phase, step)


def stop_progress() -> None:
    global _current
    _current = None


# ------------------------------------------------------------------------------------------ files


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return out


def read_ranks(run_dir: Path) -> list:
    """Every rank's latest progress record (any attempt), by rank."""
    out = []
    for path in sorted(progress_dir(run_dir).glob("rank*.json")):
        try:
            out.append(RankProgress.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # being replaced right now, or from another version
    return sorted(out, key=lambda r: r.rank)


def record_attempt(run_dir: Path, world_size: int, resumed_from: Optional[str] = None) -> None:
    """Rank 0 at the start of an attempt (``launcher status`` counts restarts and requeues from these)."""
    append_jsonl(progress_dir(run_dir) / ATTEMPTS_FILE,
                 {"attempt": attempt_id(), "world_size": world_size, "at": time.time(),
                  "resumed_from": resumed_from})


def record_reshard(run_dir: Path, record: dict) -> None:
    """Rank 0 when it resumed onto another world size or parallelism (launcher.engines.reshard.describe_reshard)."""
    append_jsonl(progress_dir(run_dir) / RESHARDS_FILE, {"attempt": attempt_id(), **record})


# ------------------------------------------------------------------------------------------ for status and the UI


def run_health(run_dir: Path, now: Optional[float] = None) -> dict:
    """What ``launcher status`` and the UI show of a run's ranks, from the run dir alone (no SLURM, no torch):

    ``phase`` (the least advanced rank's), ``step``, ``ranks`` (each rank's phase, step, host, pid, seconds since
    its last progress and since its watchdog last wrote, attempt), ``stalls`` (every stall acted on: time,
    stalled ranks, phase, step, stack folder), ``attempts`` (each start of the ranks) and ``restarts`` (starts
    after the first: torchrun restarts and SLURM requeues). Empty lists where the run has no such files."""
    now = time.time() if now is None else now
    ranks = read_ranks(run_dir)
    attempts = read_jsonl(progress_dir(run_dir) / ATTEMPTS_FILE)
    latest = attempts[-1]["attempt"] if attempts else (ranks[-1].attempt if ranks else None)
    current_ranks = [r for r in ranks if r.attempt == latest] or ranks
    stalls = [{k: s.get(k) for k in ("time", "attempt", "stalled_ranks", "phase", "step", "folder", "description")}
              for s in read_jsonl(progress_dir(run_dir) / STALLS_FILE)]
    lead = min(current_ranks, key=lambda r: (r.step, PHASES.index(r.phase) if r.phase in PHASES else 0),
               default=None)
    return {
        "phase": lead.phase if lead else None,
        "step": lead.step if lead else None,
        "ranks": [{"rank": r.rank, "phase": r.phase, "step": r.step, "host": r.host, "pid": r.pid,
                   "attempt": r.attempt, "progress_at": r.progress_at, "alive_at": r.alive_at,
                   "since_progress_s": round(now - r.progress_at, 1), "since_alive_s": round(now - r.alive_at, 1)}
                  for r in current_ranks],
        "stalls": stalls,
        "attempts": attempts,
        "restarts": max(0, len(attempts) - 1),
        **_reshards(run_dir),
    }


def _reshards(run_dir: Path) -> dict:
    """``reshards``: each resume onto another world size or parallelism (launcher.engines.reshard); the key only
    where the run was resharded."""
    found = read_jsonl(progress_dir(run_dir) / RESHARDS_FILE)
    return {"reshards": found} if found else {}


def health_lines(health: dict) -> list:
    """``run_health`` as the indented lines ``launcher status`` prints."""
    lines = []
    if health["phase"] is not None:
        lines.append(f"  phase: {health['phase']} (step {health['step']})")
    for r in health["ranks"]:
        lines.append(f"  rank {r['rank']}: {r['phase']}, step {r['step']}, last progress {r['since_progress_s']:.0f} s"
                     f" ago ({r['host']} pid {r['pid']})")
    if health["restarts"]:
        lines.append(f"  restarts: {health['restarts']} (torchrun restarts and requeues; attempts"
                     f" {', '.join(a['attempt'] for a in health['attempts'])})")
    for r in health.get("reshards", []):
        lines.append(f"  {reshard_line(r)}")
    for s in health["stalls"]:
        lines.append(f"  stall at {s['time']}: rank(s) {', '.join(map(str, s['stalled_ranks'] or []))} in phase"
                     f" '{s['phase']}' at step {s['step']}; stacks in {s['folder']}")
    return lines
