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


def current() -> Optional[Progress]:
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
