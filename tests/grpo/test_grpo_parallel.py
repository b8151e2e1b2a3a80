"""Under 2 gloo ranks (DDP, ZeRO-3, FSDP) GRPO's per-step losses equal one process's on the same completions
(tests/grpo/grpo_worker.py fixes them by the prompt), within float tolerance: the loss is normalised over the
whole step (every micro-batch, every rank), so how the step is split does not change it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.metrics import read_metrics
from tests.rm.helpers import SMALL_MODEL

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("grpo_worker.py")
LOSS_RTOL = 1e-5
COMMON = [
    "method=grpo", *SMALL_MODEL, "data.max_samples=32", "data.eval_datasets=[]", "train.micro_batch_size=2",
    "train.global_batch_size=4", "train.grad_accum=null", "train.max_steps=4", "train.log_every=1", "train.warmup_ratio=0",
    "train.exact_match_samples=0", "train.save_model=false", "method.lr=3e-3", "method.grpo.num_generations=3",
    "method.grpo.max_completion_length=5", "method.grpo.num_iterations=2", "method.grpo.eval_prompts=0",
    "method.grpo.rewards=[length,tests.grpo.rewards_for_tests:first_char_is_digit]", "method.grpo.length_target=2",
]


def launch(root: Path, name: str, nproc: int, overrides: list) -> Path:
    cfg = compose_config([f"run.output_root={root}", *COMMON, f"cluster.nproc_per_node={nproc}", *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER),
           "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return run_dir


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo_par")
    return root, read_metrics(launch(root, "one", 1, []), "train")


@pytest.mark.parametrize("parallelism", ["ddp", "zero3", "fsdp"])
def test_grpo_losses_on_two_ranks_equal_one_process(one_process, parallelism):
    root, want = one_process
    got = read_metrics(launch(root, parallelism, 2, [f"parallelism={parallelism}"]), "train")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3, 4]
    assert len({round(r["loss"], 6) for r in want}) > 1  # the loss moves: weights and ratios are compared
    for a, b in zip(want, got):
        assert b["reward"] == pytest.approx(a["reward"], abs=1e-12), a["step"]
        assert b["completion_length"] == a["completion_length"]
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL, abs=1e-7), (a["step"], a["loss"], b["loss"])
