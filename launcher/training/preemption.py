"""Stopping cleanly when SLURM says the job must go (time limit near, or preemption), and resuming exactly.

How a stop travels (see also launcher/slurm/node.py):

1. SLURM says the job must go with a signal to every process of the job step (the node process, the torchrun
   agent and the ranks): USR2 where the job asked for it (``--signal=USR2@N``, ``scancel -s USR2 JOB``), and
   SIGTERM for everything else: hard preemption, ``scontrol requeue``, the time limit, ``scancel -s TERM``
   (SIGKILL follows after the cluster's KillWait/GraceTime). The node process starts torchrun with USR2 and
   TERM *ignored* and tells the agent not to handle TERM (``--signals-to-handle``): otherwise the agent dies
   of USR2, or answers TERM by killing its workers 30 s later whatever they are doing. The ranks inherit the
   ignored signals and replace them with ``StopFlag``'s handler, which only sets a flag (the node process
   lists the signals in ``STOP_SIGNALS_ENV``; a local run's launcher lists INT and TERM too: Ctrl-C and
   ``kill`` checkpoint at the next step boundary, see ``launcher.launch.local``). The node process also forwards the signal to the ranks itself (a cluster may deliver it to
   the task's main process only) and writes ``STOP_REQUESTED`` so that a rank still starting up, which could
   not have caught the signal yet, sees the request too.
2. At each step boundary every rank all-reduces its flag (MAX): all ranks agree on the same step, save a
   checkpoint there (every rank takes part), rank 0 writes ``STOPPED`` and the ranks exit 0. The same
   all-reduce carries rank 0's "train.save_every_minutes have passed" (``boundary_decision``), so periodic
   saves by time happen at the same step on every rank and cost no extra collective.
3. The node process on node 0 finds ``STOPPED`` for its own job attempt and requeues the job, a bounded
   number of times (``launcher/slurm/requeue.py``). The requeued job runs the same pickled node launcher,
   with the same run dir, and resumes from that run dir's latest complete checkpoint.

Nothing here is SLURM-specific: a local run sent USR2 saves and stops the same way.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Mapping, Optional

from launcher.paths import METRICS_FILE

log = logging.getLogger("launcher.preemption")

PREEMPT_SIGNAL = signal.SIGUSR2
"""submitit's and our signal; never USR1, which NCCL claims for itself."""
STOP_SIGNALS_ENV = "LAUNCHER_STOP_SIGNALS"
"""Set by the SLURM node process for its ranks: the signals that mean "checkpoint and stop" (USR2,TERM)."""
SLURM_STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def stop_signals(environ: Optional[Mapping[str, str]] = None) -> tuple:
    """The signals a rank turns into a stop request: USR2, and TERM too when the node process said so."""
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get(STOP_SIGNALS_ENV, "").split(",") if n.strip()]
    signals = {PREEMPT_SIGNAL, *(signal.Signals[n if n.startswith("SIG") else "SIG" + n] for n in names)}
    return tuple(sorted(signals))

STATE_DIR = "preemption"
STOP_REQUESTED = "stop-requested.json"
"""Node process -> ranks: a stop was requested for this job attempt (written before forwarding the signal)."""
STOPPED = "stopped.json"
"""Rank 0 -> node process: the ranks saved a checkpoint and stopped early in this job attempt."""



def attempt_key(environ: Optional[Mapping[str, str]] = None) -> str:
    """Which attempt of which job this process belongs to: a requeued job keeps its id, SLURM counts restarts."""
    env = os.environ if environ is None else environ
    return f"{env.get('SLURM_JOB_ID', 'local')}.{env.get('SLURM_RESTART_COUNT', '0')}"


def state_dir(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_DIR


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def request_stop(run_dir: Path, signum: int, environ: Optional[Mapping[str, str]] = None) -> None:
    """Node side: record that this job attempt was asked to stop."""
    _write_json(state_dir(run_dir) / STOP_REQUESTED,
                {"attempt": attempt_key(environ), "signal": signal.Signals(signum).name, "at": time.time()})


def stop_was_requested(run_dir: Path, environ: Optional[Mapping[str, str]] = None) -> bool:
    record = _read_json(state_dir(run_dir) / STOP_REQUESTED)
    return bool(record) and record.get("attempt") == attempt_key(environ)


def mark_stopped(run_dir: Path, step: int, checkpoint: Path, signum: Optional[int] = None) -> None:
    """Rank 0: the ranks saved ``checkpoint`` at ``step`` and leave early (on ``signum`` where rank 0 got it);
    the node process requeues, a local launcher prints the resume command."""
    _write_json(state_dir(run_dir) / STOPPED,
                {"attempt": attempt_key(), "step": step, "checkpoint": str(checkpoint), "at": time.time(),
                 "signal": signal.Signals(signum).name if signum else None})


def stopped_early(run_dir: Path, environ: Optional[Mapping[str, str]] = None) -> Optional[dict]:
    """The STOPPED record of this job attempt, or None when the ranks ended for another reason."""
    record = _read_json(state_dir(run_dir) / STOPPED)
    if record and record.get("attempt") == attempt_key(environ):
        return record
    return None


def clear_stop_state(run_dir: Path) -> None:
    """Node 0, before starting the ranks: requests and stops of earlier attempts say nothing about this one."""
    for name in (STOP_REQUESTED, STOPPED):
        try:
            (state_dir(run_dir) / name).unlink()
        except FileNotFoundError:
            pass


class StopFlag:
    """Per rank: the signal handler only sets a flag; ``should_stop`` makes all ranks agree at a step boundary."""

    def __init__(self, run_dir: Path, signals: Optional[tuple] = None, escalate: tuple = ()):
        self.run_dir = Path(run_dir)
        self.received: Optional[int] = None
        self.signals = stop_signals() if signals is None else tuple(signals)
        self.escalate = tuple(escalate)
        """Signals whose second arrival ends the process at once (KeyboardInterrupt): a local run in the launcher's
        own process, where a second Ctrl-C means "stop now, no checkpoint". Never on ranks under torchrun or SLURM,
        which may get one signal twice (from the terminal or SLURM, and forwarded by their parent)."""
        for signum in self.signals:
            signal.signal(signum, self._handle)
        # A stop requested while this rank was still importing (USR2 ignored then) is not lost.
        if stop_was_requested(self.run_dir):
            self.received = int(PREEMPT_SIGNAL)

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum in self.escalate:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} a second time: stopping now, no checkpoint")
        self.received = signum

    def close(self) -> None:
        """Ignore the signal from now on: Python's exit restores the default action (terminate) for signals
        it handled, and a late or forwarded USR2/TERM must not turn a clean exit into a crash (exit code -12)."""
        for signum in self.signals:
            signal.signal(signum, signal.SIG_IGN)

    def requested(self) -> bool:
        """This rank got a stop signal (local; ``boundary_decision`` makes the ranks agree)."""
        return self.received is not None

    def should_stop(self, device) -> bool:
        """Collective (every rank calls it at the same step): True on all ranks when any rank got the signal."""
        return boundary_decision(self, False, device)[0]


def boundary_decision(stop_flag, save_due: bool, device) -> tuple[bool, bool]:
    """Collective, at a step boundary: (stop, save) agreed by all ranks in one all-reduce (MAX).

    stop: any rank's ``stop_flag.requested()`` (a StopFlag, or a test's stand-in). save: any rank says a timed checkpoint is due; only rank 0 passes its
    clock's verdict, so ranks whose clocks differ still save at the same step."""
    import torch  # not at import time: the handler is installed before torch is loaded

    from launcher.engines.distributed import all_reduce_max

    received = stop_flag is not None and stop_flag.requested()
    flags = torch.tensor([int(received), int(save_due)], dtype=torch.int32, device=device)
    stop, save = all_reduce_max(flags).tolist()
    return bool(stop), bool(save)


# ------------------------------------------------------------------------------------------ resume


def choose_resume_checkpoint(setting: str, run_dir: Path, latest_own: Optional[Path],
                             environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Which checkpoint a starting rank loads, for run.resume = auto | never | PATH.

    A requeued job (SLURM_RESTART_COUNT > 0) or a restarted torchrun worker group (TORCHELASTIC_RESTART_COUNT
    > 0) is a continuation of this run: it resumes from its own latest checkpoint whatever the setting, so a
    run started fresh or from another run's checkpoint never goes back to that start after a requeue.
    Only checkpoints of ``run_dir`` itself are ever picked automatically.
    """
    env = os.environ if environ is None else environ
    continuation = int(env.get("SLURM_RESTART_COUNT", "0") or 0) > 0 or \
        int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    if setting == "auto" or (continuation and latest_own is not None):
        return latest_own
    if setting == "never":
        return None
    return Path(setting)


def forget_metrics_after(run_dir: Path, step: int, filename: str = METRICS_FILE) -> int:
    """Drop metrics records past ``step`` (logged after the checkpoint that is being resumed), so the
    resumed run appends each step exactly once. Returns how many records were dropped."""
    path = Path(run_dir) / filename
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record_step = json.loads(line).get("step")
        except ValueError:  # a line cut short by a kill: drop it
            dropped += 1
            continue
        if isinstance(record_step, int) and record_step > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    return dropped

