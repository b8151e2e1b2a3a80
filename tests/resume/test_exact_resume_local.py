"""Exact resume without SLURM: 20 steps straight vs 10 steps, stop, resume, 10 more; the resume choices and
the guards around checkpoints (partial ones never loaded, retention, world size)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.engines import checkpoint as ckpt
from launcher.training import preemption
from launcher.engines.distributed import init_distributed
from recipes.sft import SFTRecipe
from tests.resume.helpers import TINY, assert_same_weights, final_weights, raw_train_steps, train_losses

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 20


class StopAt:
    """Stands in for the signal: every rank 'receives' it once the recipe reaches ``step``."""

    def __init__(self, recipe, step):
        self.recipe, self.step = recipe, step

    def requested(self) -> bool:
        return self.recipe.step >= self.step


def make_run(root: Path, name: str, extra=()) -> tuple:
    cfg = compose_config([f"run.output_root={root}", f"train.max_steps={STEPS}", *TINY, *extra])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    return cfg, run_dir


def train(cfg, run_dir, stop_at=None) -> dict:
    recipe = SFTRecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    if stop_at is not None:
        recipe.stop_flag = StopAt(recipe, stop_at)
    try:
        return recipe.train()
    finally:
        recipe.cleanup()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    cfg, run_dir = make_run(root, "ref")
    train(cfg, run_dir)
    return run_dir


def test_stop_and_resume_is_bit_identical(reference, output_root):
    cfg, run_dir = make_run(output_root, "resumed", ["train.save_every=5"])
    first = train(cfg, run_dir, stop_at=10)
    assert first["preempted"] and first["final_step"] == 10
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000010"
    assert not (run_dir / "model").exists()  # a stopped attempt writes no final model
    second = train(cfg, run_dir)
    assert second["final_step"] == STEPS and not second.get("preempted")

    ref, got = train_losses(reference), train_losses(run_dir)
    assert list(got) == list(range(1, STEPS + 1))
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1)), "metrics.jsonl repeats or skips steps"
    assert got == ref, "per-step losses differ from the uninterrupted run"
    assert_same_weights(final_weights(run_dir), final_weights(reference))
    print(f"\n20 steps straight vs 10 + resume 10: {len(got)} losses equal (bit-identical), final loss {got[STEPS]:.6f}")


def test_resume_after_a_crash_drops_the_lost_steps_from_metrics(reference, output_root):
    """Checkpoint at 5, the attempt dies at 8 (steps 6-8 logged): the resume logs 6-8 once more, not twice."""
    cfg, run_dir = make_run(output_root, "crashed", ["train.save_every=5"])
    train(cfg, run_dir, stop_at=8)
    shutil.rmtree(ckpt.checkpoint_root(run_dir) / "step-0000008")  # as if killed before saving at 8
    assert raw_train_steps(run_dir)[-1] == 8
    train(cfg, run_dir)
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1))
    assert train_losses(run_dir) == train_losses(reference)
    assert_same_weights(final_weights(run_dir), final_weights(reference))


def test_partial_checkpoint_is_never_loaded_and_retention_keeps_one(output_root):
    cfg, run_dir = make_run(output_root, "partial", ["train.save_every=4", "train.keep_checkpoints=1"])
    train(cfg, run_dir, stop_at=8)
    root = ckpt.checkpoint_root(run_dir)
    assert [p.name for p in ckpt.complete_checkpoints(run_dir)] == ["step-0000008"]  # keep=1 kept the newest
    # A writer killed mid-save leaves a temporary dir, or (never by our writer) a step dir without marker.
    (root / ".tmp-step-0000012").mkdir()
    (root / ".tmp-step-0000012" / "state.pt").write_bytes(b"garbage")
    (root / "step-0000016").mkdir()
    (root / "step-0000016" / "meta.json").write_text(json.dumps({"step": 16, "world_size": 1}))
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000008"
    ckpt.prune_checkpoints(run_dir, keep=1)
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000008", "retention deleted the only complete checkpoint"
    assert not (root / ".tmp-step-0000012").exists()
    # Pointing run.resume at the partial one is refused with the reason.
    bad = SFTRecipe(compose_config([f"run.output_root={output_root}", *TINY, f"run.resume={root / 'step-0000016'}"]),
                    run_dir, init_distributed())
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        bad.setup()


def test_different_world_size_is_refused(output_root):
    cfg, run_dir = make_run(output_root, "ws", ["train.save_every=4"])
    train(cfg, run_dir, stop_at=4)
    meta_path = ckpt.latest_checkpoint(run_dir) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "world_size": 2}))  # as written by a 2-rank run
    ckpt.mark_complete(meta_path.parent)  # whose manifest matches its files
    recipe = SFTRecipe(cfg, run_dir, init_distributed())
    with pytest.raises(ConfigError, match="world size 2, this run has 1"):
        recipe.setup()


def test_resume_choice(tmp_path):
    own = tmp_path / "run" / "checkpoints" / "step-0000010"
    other = tmp_path / "other" / "checkpoints" / "step-0000030"
    first = {"SLURM_JOB_ID": "7"}
    requeued = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1"}
    restarted = {"TORCHELASTIC_RESTART_COUNT": "2"}
    choose = preemption.choose_resume_checkpoint
    assert choose("auto", tmp_path / "run", own, first) == own
    assert choose("auto", tmp_path / "run", None, first) is None
    assert choose("never", tmp_path / "run", own, first) is None
    assert choose(str(other), tmp_path / "run", own, first) == other
    # A requeued or restarted attempt continues its own run, never going back to where it started from.
    for env in (requeued, restarted):
        assert choose("never", tmp_path / "run", own, env) == own
        assert choose(str(other), tmp_path / "run", own, env) == own
        assert choose(str(other), tmp_path / "run", None, env) == other


def test_usr2_to_torchrun_ranks_checkpoints_and_stops(output_root):
    """Two ranks under torchrun, USR2 sent to one rank only: both agree on one step, save it, exit 0."""
    cfg, run_dir = make_run(output_root, "signal", ["cluster.nproc_per_node=2", "train.max_steps=400",
                                                     "train.micro_batch_size=2"])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "-m", "recipes.sft", "--run-dir", str(run_dir)]
    # Like node.py: the agent ignores USR2 (it would die of it), the ranks inherit that, then install handlers.
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and len(raw_train_steps(run_dir)) >= 3):
        time.sleep(0.3)
    import psutil

    ranks = psutil.Process(proc.pid).children(recursive=True)
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    stopped = preemption.stopped_early(run_dir)
    assert stopped and 3 <= stopped["step"] < 400, out[-3000:]
    assert ckpt.latest_checkpoint(run_dir).name == ckpt.step_dir_name(stopped["step"])
    assert raw_train_steps(run_dir)[-1] == stopped["step"]
    assert "stopped at step" in out


def test_requeues_are_bounded_by_max_requeues(tmp_path, capsys):
    from launcher.slurm.node import NodeLauncher
    from launcher.slurm.requeue import record_requeue, requeue_history

    cfg = compose_config(["cluster=slurm_local", "cluster.max_requeues=1"])
    node = NodeLauncher(run_dir=str(tmp_path))
    requeued = []
    import launcher.slurm.node as node_module

    original, node_module.requeue_job = node_module.requeue_job, requeued.append
    try:
        with pytest.raises(SystemExit):
            node._requeue(cfg, "5", 0, {"step": 7, "checkpoint": "ck7"})
        assert requeued == ["5"] and [r["step"] for r in requeue_history(tmp_path)] == [7]
        with pytest.raises(RuntimeError, match="cluster.max_requeues=1 requeues are used up.*run.resume=ck9"):
            node._requeue(cfg, "5", 0, {"step": 9, "checkpoint": "ck9"})
        assert requeued == ["5"] and len(requeue_history(tmp_path)) == 1
    finally:
        node_module.requeue_job = original
    assert record_requeue(tmp_path, "5", 9, max_requeues=2) == 2


def test_restarted_ranks_get_a_fresh_rendezvous_store(tmp_path):
    """Why node.py sets TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: after a crash, torchrun's restarted ranks must
    not read the dead ranks' gloo addresses (rank 0 is slow to come back here, as a loaded host makes it)."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, time, torch, torch.distributed as dist\n"
        "rank, attempt = int(os.environ['RANK']), int(os.environ['TORCHELASTIC_RESTART_COUNT'])\n"
        "if rank == 0 and attempt == 1: time.sleep(4)\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.ones(1); dist.all_reduce(t)\n"
        "if attempt == 0 and rank == 0: os._exit(9)\n"
        "if attempt == 0: time.sleep(30)\n"
        "print(f'attempt {attempt} rank {rank} sum {t.item()}', flush=True)\n"
        "dist.destroy_process_group()\n"
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=t",
                           "--max-restarts=1", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "attempt 1 rank 0 sum 2.0" in done.stdout and "attempt 1 rank 1 sum 2.0" in done.stdout


def test_requeued_attempt_with_resume_never_continues_its_own_run(output_root, monkeypatch):
    """run.resume=never starts fresh, but the requeued attempt of that run must not start over."""
    cfg, run_dir = make_run(output_root, "never", ["train.save_every=4", "run.resume=never"])
    train(cfg, run_dir, stop_at=4)
    fresh = SFTRecipe(cfg, run_dir, init_distributed())
    fresh.setup()
    assert fresh.step == 0
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = SFTRecipe(cfg, run_dir, init_distributed())
    again.setup()
    assert again.step == 4
