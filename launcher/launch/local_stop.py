"""Ctrl-C and SIGTERM on a local run: checkpoint at the next step boundary, then say how to resume.

A local run is stopped the way a SLURM run is on its preemption signal (launcher/training/preemption.py): the
ranks turn the signal into a flag, all ranks agree on the stop step in the all-reduce they already make at
every step boundary, every rank saves its part of that step's checkpoint, and rank 0 writes ``STOPPED``.

- Several ranks (torchrun): Ctrl-C reaches every process of the terminal's foreground group, ``kill PID``
  only the launcher. So torchrun's agent starts with INT and TERM ignored and handling neither (by default
  it kills its workers on either), the ranks inherit the ignored signals and replace them with the stop
  flag's handler (``STOP_SIGNALS_ENV``), and this process catches both, writes ``STOP_REQUESTED`` (for a rank
  still starting up) and forwards the signal to each rank once. A second Ctrl-C / TERM ends the ranks at
  once (SIGKILL), without a checkpoint.
- One rank in the launcher's own process: the stop flag handles INT and TERM itself; a second one raises
  KeyboardInterrupt.

Afterwards the launcher prints the command that continues the run: the same overrides with
``run.resume=<the checkpoint>`` (a new run dir that starts at the saved step, data position and RNG included).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from launcher.training.preemption import (PREEMPT_SIGNAL, STOP_SIGNALS_ENV, clear_stop_state, request_stop,
                                         stopped_early)

LOCAL_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What a user sends a local run: Ctrl-C, ``kill PID`` (and the UI's stop). USR2 is a stop signal everywhere."""
AGENT_SIGNALS_FLAG_LOCAL = "--signals-to-handle=SIGHUP,SIGQUIT"
"""torchrun's agent leaves INT and TERM to us (torch >= 2.9; its default handles both by killing the ranks)."""


def rank_stop_env(env: dict) -> dict:
    """The ranks' environment: INT and TERM (and USR2) mean "checkpoint and stop"."""
    env = dict(env)
    env[STOP_SIGNALS_ENV] = ",".join(s.name for s in (PREEMPT_SIGNAL, *LOCAL_STOP_SIGNALS))
    return env


def resume_command(run_dir: Path, checkpoint: Path, default_name: Optional[str] = None) -> str:
    """``launcher train <the run's overrides> run.resume=CHECKPOINT [--name NAME]``: a run that continues from
    ``checkpoint``. The overrides are the run's own (``overrides.txt``), any earlier run.resume replaced; the
    name is kept when it was not the default one (run dirs are OUTPUT_ROOT/<name>/<date>/<time>)."""
    from launcher.shell import shell_command

    path = Path(run_dir) / "overrides.txt"
    overrides = path.read_text().splitlines() if path.is_file() else []
    kept = [o for o in overrides if o.strip() and not o.lstrip("+~").startswith("run.resume=")]
    argv = ["launcher", "train", *kept, f"run.resume={checkpoint}"]
    name = Path(run_dir).parent.parent.name
    if default_name is not None and name != default_name:
        argv += ["--name", name]
    return shell_command(argv)


def stop_report(run_dir: Path, default_name: Optional[str]) -> Optional[str]:
    """The lines printed after a local run stopped early on a signal; None when it did not."""
    stopped = stopped_early(run_dir)
    if stopped is None:
        return None
    return (f"[launcher] stopped at step {stopped['step']}; checkpoint saved: {stopped['checkpoint']}\n"
            f"[launcher] resume with:\n  {resume_command(run_dir, Path(stopped['checkpoint']), default_name)}")


class LocalStopper:
    """This process's INT/TERM handlers while the ranks run under torchrun (see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.signalled: Optional[int] = None
        self.killed = False
        self._forwarded: set = set()
        self._previous: dict = {}

    def __enter__(self) -> "LocalStopper":
        clear_stop_state(self.run_dir)
        for signum in LOCAL_STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, frame) -> None:
        if self.signalled is None:
            self.signalled = signum
            print(f"\n[launcher] caught {signal.Signals(signum).name}: the ranks save a checkpoint at the next step"
                  " boundary and stop (send it again to stop at once, without a checkpoint)", file=sys.stderr,
                  flush=True)
            # Written before forwarding: a rank still starting up (signal ignored then) reads it when it is ready.
            request_stop(self.run_dir, signum)
        elif not self.killed:
            self.killed = True
            print(f"\n[launcher] {signal.Signals(signum).name} again: stopping the ranks now, no checkpoint",
                  file=sys.stderr, flush=True)

    def run(self, argv: list, env: dict) -> int:
        """torchrun with INT and TERM ignored (the ranks inherit that, then install the stop flag's handler)."""
        import psutil

        from launcher.slurm.node import torchrun_workers

        proc = subprocess.Popen(argv, env=rank_stop_env(env), preexec_fn=_ignore_local_stop_signals)
        while proc.poll() is None:
            if self.signalled is not None:
                try:
                    workers = torchrun_workers(psutil.Process(proc.pid))
                except psutil.NoSuchProcess:
                    workers = []
                for worker in workers:
                    try:
                        if self.killed:
                            worker.kill()
                        elif worker.pid not in self._forwarded:
                            self._forwarded.add(worker.pid)
                            worker.send_signal(self.signalled)
                    except psutil.NoSuchProcess:
                        pass
            time.sleep(0.05)
        return proc.returncode


def _ignore_local_stop_signals() -> None:
    # In the child before exec: an ignored signal stays ignored across exec.
    for signum in (PREEMPT_SIGNAL, *LOCAL_STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def exit_code_after(run_dir: Path, signalled: Optional[int], returncode: int) -> int:
    """A run stopped by a signal exits 128 + the signal (130 for Ctrl-C, as shells report it), even when it
    saved cleanly: a script's ``launcher train ... && launcher export ...`` must not go on as if it finished."""
    stopped = stopped_early(run_dir)
    if returncode == 0 and stopped is not None:
        name = stopped.get("signal")
        signum = signal.Signals[name] if name in signal.Signals.__members__ else signalled or signal.SIGINT
        return 128 + int(signum)
    if returncode == 0 and signalled is not None:
        return 128 + int(signalled)
    return returncode


def restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        if handler is not None:
            signal.signal(signum, handler)


def current_handlers() -> dict:
    return {signum: signal.getsignal(signum) for signum in (PREEMPT_SIGNAL, *LOCAL_STOP_SIGNALS)}

