"""Ctrl-C on a local 2-rank run (gloo, torchrun): both ranks checkpoint at one step, the launcher prints the resume
command, and that command finishes the run with the uninterrupted run's losses, bit for bit.

SIGINT goes to the whole process group, as a terminal's Ctrl-C does (the launcher, torchrun's agent, the ranks).
SIGTERM to the launcher alone (``kill PID``) takes the same path through the launcher's forwarding (the ranks
get the signal from the launcher, as they do here too); StopFlag's TERM handling is in test_stop_signals.py.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from launcher.engines import checkpoint as ckpt
from launcher.slurm.jobs import status_main
from tests.resume.helpers import TINY, raw_train_steps, train_losses

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 24
ARGS = [f"train.max_steps={STEPS}", *TINY, "cluster.nproc_per_node=2", "train.micro_batch_size=2",
        "train.save_model=false", "logger=none"]


def launcher_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")


def start(argv: list) -> subprocess.Popen:
    # A session of its own: killpg then reaches exactly what a terminal's Ctrl-C reaches.
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", "train", *argv], cwd=REPO_ROOT, env=launcher_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run_dir_of(root: Path) -> Path:
    found = sorted(p.parent for p in root.rglob("config.yaml") if p.parent.name != "code")
    assert len(found) == 1, found
    return found[0]


def wait_for_step(root: Path, step: int, proc: subprocess.Popen, timeout_s: float = 240) -> Path:
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        dirs = [p.parent for p in root.rglob("metrics.jsonl")]
        if dirs and len(raw_train_steps(dirs[0])) >= step:
            return dirs[0]
        time.sleep(0.1)
    raise AssertionError(f"no step {step} before the run ended:\n{proc.communicate()[0][-3000:]}")


def test_ctrl_c_checkpoints_both_ranks_and_the_printed_command_resumes_exactly(tmp_path, capsys):
    reference = start([f"run.output_root={tmp_path / 'ref'}", *ARGS])
    stopped_root = tmp_path / "stopped"
    proc = start([f"run.output_root={stopped_root}", *ARGS])
    wait_for_step(stopped_root, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, out[-3000:]
    run_dir = run_dir_of(stopped_root)

    assert "caught SIGINT: the ranks save a checkpoint at the next step boundary" in out
    stop = raw_train_steps(run_dir)[-1]
    assert 3 <= stop < STEPS, out[-3000:]
    checkpoint = ckpt.latest_checkpoint(run_dir)
    assert checkpoint.name == ckpt.step_dir_name(stop) and (checkpoint / ckpt.COMPLETE).is_file()
    ckpt.check_resume_checkpoint(checkpoint)  # every rank's files present and matching the manifest
    assert f"stopped at step {stop}; checkpoint saved: {checkpoint}" in out
    assert status_main([str(run_dir)]) == 0  # a local run: its ranks' progress, from the run dir
    status = capsys.readouterr().out
    assert f"rank 0: done, step {stop}" in status and f"rank 1: done, step {stop}" in status, status
    command = out.split("[launcher] resume with:\n", 1)[1].splitlines()[0].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["launcher", "train"] and f"run.resume={checkpoint}" in argv, command

    resumed = start(argv[2:])
    out2, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out2[-3000:]
    resumed_dir = next(p for p in map(Path, (p.parent for p in stopped_root.rglob("config.yaml")))
                       if p != run_dir and p.name != "code")
    assert raw_train_steps(resumed_dir) == list(range(stop + 1, STEPS + 1))

    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out[-3000:]
    ref = train_losses(run_dir_of(tmp_path / "ref"))
    got = {**train_losses(run_dir), **train_losses(resumed_dir)}
    assert got == ref, [(s, got.get(s), ref[s]) for s in ref if got.get(s) != ref[s]][:5]
    print(f"\nCtrl-C at step {stop} of {STEPS} (2 ranks): checkpoint, resume command, {len(got)} losses bit-identical")

