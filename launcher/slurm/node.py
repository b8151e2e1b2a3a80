"""What runs in each SLURM task (one per node): find the head node and port, run one torchrun.

submitit pickles a ``NodeLauncher`` at submit time and calls it on every node. It reads only SLURM's
variables and the run dir; the ranks it starts read RUN_DIR/config.yaml, never Hydra.

Preemption (``--signal=USR2@cluster.signal_delay_s``, ``scancel -s USR2 JOB``, and SIGTERM: hard
preemption, ``scontrol requeue``, the time limit): SLURM signals every process of the step. torchrun's agent
has no USR2 handler and would die of it, and answers TERM by killing its workers after 30 s, so torchrun
starts with both ignored and without a TERM handler (``--signals-to-handle``), and this process takes over
submitit's handlers: it notes the request in the run dir and forwards the signal to the ranks, which
checkpoint together at a step boundary and exit 0 (launcher/training/preemption.py). Node 0 then requeues the job, at most
cluster.max_requeues times; the requeued job runs this same launcher with the same run dir and resumes from
its latest complete checkpoint. A crashed rank is handled by torchrun: --max-restarts=cluster.max_restarts,
and the restarted ranks resume from the last checkpoint.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.config.schema import load_run_config
from launcher.paths import CODE_ROOT, LOG_DIR, NODE_COMMAND_FILE, REPO_ROOT
from launcher.training.preemption import (SLURM_STOP_SIGNALS, STOP_SIGNALS_ENV, clear_stop_state, request_stop,
                                         stopped_early)
from launcher.slurm.head_node import resolve_head_node_from_env
from launcher.slurm.requeue import record_requeue, requeue_job
from launcher.slurm.render import (AGENT_SIGNALS_FLAG, format_command, port_candidates,
                                   render_torchrun_command)



@dataclass
class NodeLauncher:
    run_dir: str
    worker_module: Optional[str] = None
    """None: the recipe of the run's method."""

    def __call__(self) -> int:
        env = os.environ
        # SLURM_JOB_ID is numeric even for array tasks; it is the same on every node of the job.
        job_id = env["SLURM_JOB_ID"]
        node_rank = int(env.get("SLURM_NODEID", "0"))
        if node_rank == 0:
            clear_stop_state(Path(self.run_dir))
        self._signalled: Optional[int] = None
        self._forwarded: set = set()
        # Replaces submitit's handlers: USR2 (which would requeue at once, killing torchrun mid-step) and TERM
        # (which it ignores: a hard preemption would then restart from the last checkpoint only).
        for signum in SLURM_STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        cfg = load_run_config(self.run_dir)
        head, addr = resolve_head_node_from_env()
        port = agree_port(Path(self.run_dir), job_id, node_rank, env.get("SLURM_RESTART_COUNT", "0"))
        argv = render_torchrun_command(
            cfg, self.run_dir, addr, port, job_id, node_rank, python=sys.executable, worker_module=self.worker_module
        )
        # With a container prefix torchrun is the image's, not this Python's: the flag stays (the field's docstring
        # asks for torch >= 2.9 in the image).
        if not cfg.cluster.container_prefix and not torchrun_leaves_term_alone():
            argv.remove(AGENT_SIGNALS_FLAG)
            print("[launcher] this torch's torchrun has no --signals-to-handle (torch >= 2.9): on SIGTERM its agent"
                  " kills the ranks 30 s later, so a stop on TERM saves only if the step and checkpoint fit in"
                  " that time (USR2, cluster.signal_delay_s, is not affected)", flush=True)
        log_dir = Path(self.run_dir) / LOG_DIR / f"node{node_rank}"
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / NODE_COMMAND_FILE).write_text(format_command(argv) + "\n")
        print(
            f"[launcher] node {node_rank}/{cfg.cluster.nodes} ({env.get('SLURMD_NODENAME', '?')}): head {head}"
            f" at {addr}:{port}, job {job_id}; rank logs under {log_dir}",
            flush=True,
        )
        child_env = dict(env)
        child_env["PYTHONPATH"] = rank_pythonpath(env.get("PYTHONPATH"), self.worker_module is not None)
        # torchrun's c10d rendezvous shares one TCP store across restart rounds without a per-attempt prefix:
        # ranks restarted after a crash (--max-restarts) read the dead ranks' gloo addresses and fail to
        # connect ("Connection refused"). A store per round avoids that.
        child_env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
        child_env[STOP_SIGNALS_ENV] = ",".join(s.name for s in SLURM_STOP_SIGNALS)
        if cfg.cluster.gpus_per_node:
            from launcher.training.watchdog import nccl_flight_recorder_env

            for key, value in nccl_flight_recorder_env(Path(self.run_dir)).items():
                child_env.setdefault(key, value)
        if node_rank != 0:
            # Fails within the bound, naming address, port and interface, instead of torchrun's silent retries.
            from launcher.slurm.rendezvous import wait_for_head

            waited = wait_for_head(head, addr, port, cfg.cluster.rendezvous_timeout_s)
            print(f"[launcher] node {node_rank}: head {addr}:{port} answered after {waited:.1f} s", flush=True)
        returncode = self._run_torchrun(argv, child_env)
        stopped = stopped_early(Path(self.run_dir))
        if stopped is not None:  # saved and stopped; the exit code of the last ranks says nothing more
            self._requeue(cfg, job_id, node_rank, stopped)
        if returncode != 0:
            raise RuntimeError(
                f"torchrun on node {node_rank} exited with code {returncode}; rank logs under {log_dir}"
            )
        return 0

    # ------------------------------------------------------------------------------ preemption

    def _run_torchrun(self, argv: list, child_env: dict) -> int:
        import psutil  # noqa: F401  (imported now, not when the signal comes: forwarding must be quick)

        # cwd is the code snapshot too: `python -m` puts the cwd first on sys.path, ahead of PYTHONPATH.
        proc = subprocess.Popen(argv, cwd=str(CODE_ROOT), env=child_env,
                                preexec_fn=_ignore_preempt_signal)
        while proc.poll() is None:
            if self._signalled is not None:
                self._forward(proc.pid)
            time.sleep(0.05)
        return proc.returncode

    def _on_signal(self, signum, frame) -> None:
        if self._signalled is None:
            print(f"[launcher] caught {signal.Signals(signum).name}: asking the ranks to checkpoint and stop",
                  flush=True)
            # Written before forwarding: a rank still starting up (signal ignored) reads it when it is ready.
            request_stop(Path(self.run_dir), signum)
        self._signalled = signum

    def _forward(self, agent_pid: int) -> None:
        """The stop signal to each worker of the torchrun agent, once per worker process."""
        import psutil

        try:
            workers = torchrun_workers(psutil.Process(agent_pid))
        except psutil.NoSuchProcess:
            return
        for worker in workers:
            if worker.pid not in self._forwarded:
                self._forwarded.add(worker.pid)
                try:
                    worker.send_signal(self._signalled)
                except psutil.NoSuchProcess:
                    pass

    def _requeue(self, cfg, job_id: str, node_rank: int, stopped: dict) -> None:
        """The ranks checkpointed and stopped early: node 0 requeues (bounded); no submitit result is written."""
        if node_rank != 0:
            print(f"[launcher] ranks stopped at step {stopped['step']}; node 0 requeues the job", flush=True)
            sys.exit(1)
        if job_was_cancelled(job_id):
            # scancel sends TERM too, and SLURM would take `scontrol requeue` of a cancelled job: never undo it.
            print(f"[launcher] ranks saved step {stopped['step']} ({stopped['checkpoint']}); job {job_id} was"
                  f" cancelled, so it is not requeued: continue with run.resume={stopped['checkpoint']}",
                  flush=True)
            sys.exit(1)
        count = record_requeue(Path(self.run_dir), job_id, stopped["step"], cfg.cluster.max_requeues)
        if count is None:
            raise RuntimeError(
                f"stopped at step {stopped['step']} on a preemption signal, and cluster.max_requeues="
                f"{cfg.cluster.max_requeues} requeues are used up; the checkpoint is {stopped['checkpoint']}:"
                f" continue with a new run and run.resume={stopped['checkpoint']}"
            )
        print(f"[launcher] ranks saved step {stopped['step']} ({stopped['checkpoint']}); requeueing job {job_id}"
              f" ({count}/{cfg.cluster.max_requeues})", flush=True)
        try:
            requeue_job(job_id)
        except RuntimeError as err:
            # `scontrol requeue` by an operator, or SLURM's own preemption in REQUEUE mode, already requeues the
            # job (it is ending now); a plain `scancel` ends it for good. Either way there is nothing to add.
            print(f"[launcher] {err}; SLURM decides whether the job comes back (it resumes from"
                  f" {stopped['checkpoint']} if it does)", flush=True)
        # Like submitit's own requeue: leave without a result, SLURM runs the job again.
        sys.exit(1)



def torchrun_workers(started) -> list:
    """The ranks: children of the torchrun agent, which is the process we started or, under a container prefix
    (``apptainer exec ...``, which shares the host's process ids), a descendant of it."""
    import psutil

    for proc in [started, *started.children(recursive=True)]:
        try:
            if "torch.distributed.run" in proc.cmdline():
                return proc.children(recursive=False)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return []


def port_is_free(port: int) -> bool:
    """Whether a listening socket could take ``port`` on every address of this host, IPv4 and IPv6, as the
    c10d store will. SO_REUSEADDR as the store sets it: a port left in TIME_WAIT counts as free, a listener not."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this host
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as err:
                if family == socket.AF_INET6 and err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue
                return False
    return True


def pick_free_port(candidates: list, is_free=port_is_free) -> int:
    """The first candidate free on this host. Another job could still take it before torchrun binds it; the
    window is the second between this test and torchrun's start, and the job then fails with EADDRINUSE."""
    for port in candidates:
        if is_free(port):
            return port
    raise RuntimeError(f"no free rendezvous port on this node among {candidates[0]}..{candidates[-1]}:"
                       " another job holds them all; resubmit, or ask the admins what listens there (ss -ltnp)")


def port_file(run_dir: Path, job_id: str, restart: str) -> Path:
    """Where node 0 publishes the rendezvous port it picked; one per job id and SLURM restart (requeue)."""
    return Path(run_dir) / LOG_DIR / f"rdzv_port.{job_id}.{restart}"


def agree_port(run_dir: Path, job_id: str, node_rank: int, restart: str = "0", timeout_s: float = 600,
               poll_s: float = 0.2) -> int:
    """The rendezvous port every node of the job uses. Only the head node (node 0) can test which port is free
    where the store will listen: it takes the first free of ``port_candidates`` and writes it to the run dir
    (shared by the nodes, like config.yaml); the other nodes wait for that file."""
    path = port_file(run_dir, job_id, restart)
    if node_rank == 0:
        port = pick_free_port(port_candidates(job_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, path)
        return port
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(poll_s)
    raise RuntimeError(f"node {node_rank}: node 0 did not publish the rendezvous port in {path} within"
                       f" {timeout_s:.0f} s; is the run dir on a file system all nodes share?")


def rank_pythonpath(inherited: Optional[str], test_payload: bool = False) -> str:
    """The ranks' PYTHONPATH: this launcher's own code first (the run's snapshot, RUN_DIR/code, when the job
    was submitted by ``launcher train``), then what the job inherited. A test payload (``worker_module``)
    lives in the checkout's tests/, outside the snapshot, so the checkout follows for it."""
    parts = [str(CODE_ROOT)]
    if test_payload and REPO_ROOT != CODE_ROOT:
        parts.append(str(REPO_ROOT))
    return os.pathsep.join(p for p in (*parts, inherited) if p)


def job_was_cancelled(job_id: str) -> bool:
    """scancel, as opposed to a preemption, requeue or time limit. While the job's steps still run, the controller
    says only COMPLETING for both a cancel and a requeue; accounting already says "CANCELLED by UID"."""
    states = []
    for argv in (["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"],
                 ["scontrol", "-o", "show", "job", str(job_id)]):
        try:
            states.append(subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return any(out.lstrip().startswith("CANCELLED") or "JobState=CANCELLED" in out for out in states)


def torchrun_leaves_term_alone() -> bool:
    """Whether this torch's torchrun takes ``--signals-to-handle`` (torch >= 2.9, pytorch#160690)."""
    import dataclasses

    from torch.distributed.launcher.api import LaunchConfig

    return any(f.name == "signals_to_handle" for f in dataclasses.fields(LaunchConfig))


def _ignore_preempt_signal() -> None:
    # Runs in the child before exec: an ignored signal stays ignored across exec, so the torchrun agent
    # survives USR2 and TERM and its ranks are immune until they install their own handler.
    for signum in SLURM_STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
