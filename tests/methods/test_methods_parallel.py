"""KTO and pretraining under DDP, ZeRO-3 and FSDP2 on 2 CPU processes (torchrun, gloo): each sharded run gives
DDP's per-step losses (as tests/parallel/test_parallel_train.py checks for SFT), and its saved model reloads
with the logits of DDP's saved model (the same training within float tolerance).

KTO on 2 ranks: the KL reference point is averaged over the ranks each micro-batch (TRL gathers it), and the
loss is a mean over every row of the step, so the sums match DDP's exactly up to float order.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from tests.kto.helpers import fast as kto_fast
from tests.kto.helpers import write_feedback_data
from tests.methods.test_pretrain import text_overrides, write_text_data

REPO_ROOT = Path(__file__).resolve().parents[2]
LOSS_RTOL = 1e-5
COMMON = ["train.max_steps=4", "train.grad_accum=2", "train.log_every=1", "train.eval_every=0",
          "train.warmup_ratio=0", "train.exact_match_samples=0", "train.micro_batch_size=4"]
TIMINGS: dict[str, float] = {}


def torchrun(root: Path, name: str, recipe: str, overrides: list) -> Path:
    cfg = compose_config([f"run.output_root={root}", *overrides, *COMMON])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", recipe, "--run-dir", str(run_dir)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"{name}: still running after 600 s\n{(err.stderr or b'')[-3000:]}")
    TIMINGS[name] = round(time.time() - t0, 1)
    assert proc.returncode == 0, f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return run_dir


def train_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def saved_logits(run_dir: Path, batch: dict) -> torch.Tensor:
    from launcher.inference.trained import load_trained_model

    model, _ = load_trained_model(run_dir)
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


CASES = {
    "kto": ("recipes.kto", lambda d: [*kto_fast(write_feedback_data(d, rows=32)), "method=kto", "method.lr=3e-3",
                                      "data.eval_datasets=[]", "method.kto.probe_rows=4"]),
    "pretrain": ("recipes.pretrain", lambda d: [*text_overrides(write_text_data(d)[0]), "data.val_size=4"]),
}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    return {}


@pytest.mark.parametrize("method", list(CASES))
@pytest.mark.parametrize("parallelism", ["ddp", "zero3", "fsdp"])
def test_method_under_parallelism_matches_ddp(tmp_path_factory, ddp_runs, method, parallelism):
    recipe, overrides = CASES[method]
    if method not in ddp_runs:
        data = tmp_path_factory.mktemp(f"{method}-data")
        args = overrides(data)
        ddp_runs[method] = (args, torchrun(tmp_path_factory.mktemp(f"{method}-ddp"), f"{method}-ddp", recipe,
                                           [*args, "parallelism=ddp"]))
    args, ddp = ddp_runs[method]
    want = train_losses(ddp)
    assert sorted(want) == [1, 2, 3, 4] and want[4] < want[1], want
    if parallelism == "ddp":
        return
    run_dir = torchrun(tmp_path_factory.mktemp(f"{method}-{parallelism}"), f"{method}-{parallelism}", recipe,
                       [*args, f"parallelism={parallelism}"])
    got = train_losses(run_dir)
    worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in want)
    print(f"\n{method} {parallelism}: losses {[round(got[s], 5) for s in sorted(got)]}, DDP"
          f" {[round(want[s], 5) for s in sorted(want)]}, max rel diff {worst:.1e}, {TIMINGS}")
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=LOSS_RTOL), f"step {step}: {got[step]} vs DDP {want[step]}"
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    torch.testing.assert_close(saved_logits(run_dir, batch), saved_logits(ddp, batch), rtol=0, atol=1e-4)
