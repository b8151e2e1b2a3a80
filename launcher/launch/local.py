"""cluster=local: run the ranks on this host.

One process runs in the launcher's own process (no torchrun start-up cost); more run under torchrun
``--standalone`` (a free port, so two local runs never collide), with a log file per rank. Each rank gets
OMP_NUM_THREADS = usable CPUs / local ranks unless the environment or ``cluster.env`` sets it.

The ranks under torchrun import the run's code snapshot (RUN_DIR/code, first on PYTHONPATH;
PYTHONSAFEPATH keeps a checkout in the cwd from shadowing it on Python >= 3.11); the cwd stays the user's,
so relative paths in the config mean what they meant at the prompt.

Ctrl-C or SIGTERM checkpoints at the next step boundary and prints the command that resumes the run
(``launcher.launch.local_stop``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from launcher.config.schema import Config, recipe_module
from launcher.host import usable_cpus
from launcher.paths import CODE_SNAPSHOT_DIR, LOG_DIR
from launcher.launch.rundir import child_env


def torchrun_command(cfg: Config, run_dir: Path, ranks_handle_stop: bool = False) -> list[str]:
    """``ranks_handle_stop``: the agent leaves INT and TERM to the ranks, which checkpoint and stop on them
    (``run_local``; its caller forwards them). Without it (a local sweep point, which stops its agent with TERM)
    the agent ends its ranks itself."""
    from launcher.launch.local_stop import AGENT_SIGNALS_FLAG_LOCAL
    from launcher.slurm.node import torchrun_leaves_term_alone

    return [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cfg.cluster.nproc_per_node}",
        f"--log-dir={run_dir / LOG_DIR / 'torchrun'}",
        "--tee=3",
        # Ctrl-C and TERM are the ranks' to handle (checkpoint at a step boundary), not the agent's.
        *([AGENT_SIGNALS_FLAG_LOCAL] if ranks_handle_stop and torchrun_leaves_term_alone() else []),
        "-m", recipe_module(cfg), "--run-dir", str(run_dir),
    ]


def describe_local(cfg: Config) -> str:
    from launcher.shell import shell_command

    n = cfg.cluster.nproc_per_node
    if n == 1:
        return (f"# local: one process, in the launcher's own process: python -m {recipe_module(cfg)} --run-dir RUN_DIR"
                " (the code is snapshot to RUN_DIR/code)")
    return ("# local: PYTHONPATH=RUN_DIR/code (the code snapshot taken at launch) "
            + shell_command(torchrun_command(cfg, Path("RUN_DIR"))))


def omp_threads_per_rank(ranks: int, concurrent_runs: int = 1, cpus: Optional[int] = None) -> int:
    """Threads per rank so that the ranks of all runs side by side share the CPUs without oversubscribing
    them (as the SLURM profiles set OMP_NUM_THREADS = cpus per task / ranks)."""
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, ranks * concurrent_runs))


def run_local(cfg: Config, run_dir: Path) -> int:
    """Train here; the exit code of the ranks, or 128 + the signal when Ctrl-C / TERM stopped the run (after its
    checkpoint, with the resume command printed)."""
    from launcher.config.compose import default_run_name
    from launcher.launch import local_stop

    run_dir = Path(run_dir)
    env = child_env(cfg.cluster.env)
    # A value the user set (in the environment or cluster.env) wins.
    env.setdefault("OMP_NUM_THREADS", str(omp_threads_per_rank(cfg.cluster.nproc_per_node)))
    signalled = None
    if cfg.cluster.nproc_per_node == 1:
        import torch

        from launcher.training.entry import main_in_process
        from launcher.training.preemption import PREEMPT_SIGNAL, clear_stop_state

        # In this process: the environment is read too late for torch's pool, so set its size directly.
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        clear_stop_state(run_dir)
        previous = local_stop.current_handlers()
        try:
            rc = main_in_process(run_dir, stop_signals=(PREEMPT_SIGNAL, *local_stop.LOCAL_STOP_SIGNALS),
                                 escalate=local_stop.LOCAL_STOP_SIGNALS)
        except KeyboardInterrupt as stop:
            print(f"[launcher] {stop or 'interrupted'}", file=sys.stderr, flush=True)
            rc = 130
        finally:
            local_stop.restore_handlers(previous)  # the stop flag leaves them ignored: give Ctrl-C back
    else:
        from launcher.training.watchdog import nccl_flight_recorder_env

        # NCCL's flight recorder on GPUs (ignored by gloo): the last collectives, dumped on a timeout.
        for key, value in nccl_flight_recorder_env(run_dir).items():
            env.setdefault(key, value)
        with local_stop.LocalStopper(run_dir) as stopper:
            rc = stopper.run(torchrun_command(cfg, run_dir, ranks_handle_stop=True), snapshot_env(env, run_dir))
            signalled = stopper.signalled
    report = local_stop.stop_report(run_dir, default_run_name(cfg))
    if report:
        print(report, file=sys.stderr, flush=True)
    return local_stop.exit_code_after(run_dir, signalled, rc)


def snapshot_env(env: dict, run_dir: Path) -> dict:
    """``env`` with the run's code snapshot first on PYTHONPATH (when the run dir has one)."""
    code_dir = Path(run_dir) / CODE_SNAPSHOT_DIR
    if not code_dir.is_dir():
        return env
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"
    return env
