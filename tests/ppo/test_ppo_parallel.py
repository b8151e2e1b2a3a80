"""Under 2 gloo ranks (DDP, ZeRO-3, FSDP) PPO's per-step losses equal one process's on the same completions
(tests/ppo/ppo_worker.py fixes them by the prompt), within float tolerance: the advantages are whitened over the
whole generation batch (moments summed over ranks) and the loss is the masked mean over the whole step's tokens,
so how the step is split does not change it. The pattern of tests/grpo/test_grpo_parallel.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.metrics import read_metrics
from tests.ppo.conftest import ppo_data

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ppo_worker.py")
LOSS_RTOL = 1e-5


def common(folder, rm_dir) -> list:
    return ["method=ppo", *ppo_data(folder), f"method.ppo.reward_model={rm_dir}", "data.max_samples=16",
            "train.micro_batch_size=2", "train.global_batch_size=4", "train.grad_accum=null", "train.max_steps=4",
            "train.log_every=1", "train.warmup_ratio=0", "train.save_model=false", "method.lr=3e-3",
            "method.ppo.max_completion_length=5", "method.ppo.ppo_epochs=2", "method.ppo.eval_prompts=0",
            "method.ppo.kl_coef=0.1"]


def launch(root: Path, name: str, nproc: int, overrides: list) -> Path:
    cfg = compose_config([f"run.output_root={root}", *overrides, f"cluster.nproc_per_node={nproc}"])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER),
           "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return run_dir


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, digits_task):
    folder, rm_dir, _ = digits_task
    root = tmp_path_factory.mktemp("ppo_par")
    return root, common(folder, rm_dir), read_metrics(launch(root, "one", 1, common(folder, rm_dir)), "train")


@pytest.mark.parametrize("parallelism", ["ddp", "zero3", "fsdp"])
def test_ppo_losses_on_two_ranks_equal_one_process(one_process, parallelism):
    root, overrides, want = one_process
    got = read_metrics(launch(root, parallelism, 2, [*overrides, f"parallelism={parallelism}"]), "train")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3, 4]
    assert len({round(r["loss"], 6) for r in want}) > 1  # the loss moves: weights, ratios and values are compared
    assert want[2]["kl"] != 0  # the second rollout is scored against the reference
    for a, b in zip(want, got):
        assert b["reward"] == pytest.approx(a["reward"], abs=1e-6), a["step"]
        assert b["completion_length"] == a["completion_length"]
        for key in ("loss", "policy_loss", "value_loss"):
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL, abs=1e-6), (a["step"], key, a[key], b[key])
        # the KL is a sum of differences of float32 log-probs (batches padded differently): absolute tolerance
        assert b["kl"] == pytest.approx(a["kl"], abs=1e-5), (a["step"], a["kl"], b["kl"])
