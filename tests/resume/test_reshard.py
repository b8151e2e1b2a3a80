"""Resume on another topology (launcher.engines.reshard, launcher.training.ledger), on 2 gloo ranks.

A 2-rank FSDP run trains one epoch (4 steps of global batch 8) and checkpoints at step 2; its step-2
checkpoint resumes on 1 FSDP rank with grad_accum doubled: the losses of steps 3-4 are the uninterrupted
run's within float tolerance, and the ledger of the final checkpoint holds every row of the epoch exactly once.
A 2-rank ZeRO-3 checkpoint resumes on 2 FSDP ranks the same way (its shards read back whole,
launcher.engines.zero_convert); what cannot be resharded (ZeRO-3 at another world size, into ddp or ZeRO-2) is
refused at the dry run with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.checks.preflight import PreflightError, run_preflight
from launcher.config.compose import compose_config
from launcher.engines.reshard import ignored_grad_accum, kept_grad_accum
from launcher.errors import ConfigError
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.batching import epoch_order, epoch_plan, steps_per_epoch
from launcher.training.ledger import read_ledger
from launcher.training.progress import health_lines, run_health

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = REPO_ROOT / "tests" / "parallel" / "worker.py"
# The same rows per step; only the order of floating-point sums differs (2 ranks' reduce vs 1 rank's accumulation).
LOSS_RTOL = 1e-5
GLOBAL_BATCH = 8
COMMON = ["train.epochs=1", "data.max_samples=32", "train.micro_batch_size=4", "train.grad_accum=1",
          "train.exact_match_samples=0", "train.log_every=1", "train.eval_every=0", "train.eval_max_batches=1",
          "train.warmup_ratio=0", "method.lr=2e-3", "train.keep_checkpoints=3", "train.save_every=2"]


def launch(root: Path, name: str, overrides: list, nproc: int, copy_checkpoint: Path = None) -> Path:
    """Train under torchrun with ``nproc`` ranks (the final step checkpointed too); returns the run dir."""
    cfg = compose_config([f"run.output_root={root}", *COMMON, f"cluster.nproc_per_node={nproc}", *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    if copy_checkpoint is not None:
        shutil.copytree(copy_checkpoint, run_dir / "checkpoints" / copy_checkpoint.name)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), "--run-dir", str(run_dir), "--checkpoint-after"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}")
    (run_dir / "torchrun.log").write_text(proc.stdout + proc.stderr)
    return run_dir


def train_losses(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reshard")


@pytest.fixture(scope="module")
def fsdp_two_ranks(root) -> Path:
    return launch(root, "fsdp2", ["parallelism=fsdp"], nproc=2)


def test_fsdp_two_ranks_resume_on_one_rank(root, fsdp_two_ranks):
    reference = fsdp_two_ranks
    want = train_losses(reference)
    assert sorted(want) == [1, 2, 3, 4], "one epoch of 4 steps of global batch 8"
    step2 = reference / "checkpoints" / "step-0000002"
    meta = json.loads((step2 / "meta.json").read_text())
    assert (meta["world_size"], meta["parallelism"], meta["grad_accum"]) == (2, "fsdp", 1)
    assert len(read_ledger(step2)["trained"]) == 2 * GLOBAL_BATCH

    resumed = launch(root, "fsdp1", ["parallelism=fsdp"], nproc=1, copy_checkpoint=step2)
    got = train_losses(resumed)
    assert sorted(got) == [3, 4], "the resume trains the rest of the epoch, no more, no less"
    for step in got:
        assert got[step] == pytest.approx(want[step], rel=LOSS_RTOL), f"step {step}: {got[step]} vs {want[step]}"
    log = (resumed / "torchrun.log").read_text()
    assert "train.grad_accum 1 -> 2 keeps the global batch 8" in log

    # Every row of the epoch trained exactly once across the change, in the uninterrupted run's steps.
    assert_epoch_trained_once(resumed, reference)

    # launcher status says it was resharded.
    lines = "\n".join(health_lines(run_health(resumed)))
    assert "resharded at step 2: world size 2 -> 1 (fsdp), grad_accum 1 -> 2 (global batch 8 kept)" in lines


def assert_epoch_trained_once(run_dir: Path, like: Path) -> None:
    """The final checkpoint's ledger holds every row of the epoch once, the rows ``like``'s final ledger holds."""
    final = read_ledger(run_dir / "checkpoints" / "step-0000004")
    n_rows, trained = final["n_rows"], final["trained"]
    spe = steps_per_epoch(n_rows, 2, 4, 1)
    assert spe == 4 and final["epoch"] == 0
    assert len(trained) == len(set(trained)) == spe * GLOBAL_BATCH
    assert set(trained) == set(epoch_order(n_rows, 42, 0)[:spe * GLOBAL_BATCH])
    assert set(trained) == set(read_ledger(like / "checkpoints" / "step-0000004")["trained"])


def test_zero3_two_ranks_resume_on_two_fsdp_ranks(root):
    zero3 = launch(root, "zero3", ["parallelism=zero3"], nproc=2)
    want = train_losses(zero3)
    step2 = zero3 / "checkpoints" / "step-0000002"
    cfg = compose_config([f"run.output_root={root}", *COMMON, "cluster.nproc_per_node=2", "parallelism=fsdp",
                          f"run.resume={step2}"], check=False)
    assert not [p for p in run_preflight(cfg) if "run.resume" in str(p)]  # the dry run lets it through

    resumed = launch(root, "zero3-fsdp", ["parallelism=fsdp"], nproc=2, copy_checkpoint=step2)
    got = train_losses(resumed)
    assert sorted(got) == [3, 4]
    for step in got:  # step 4 also checks the AdamW state and the scheduled lr carried over
        assert got[step] == pytest.approx(want[step], rel=LOSS_RTOL), f"step {step}: {got[step]} vs {want[step]}"
    assert_epoch_trained_once(resumed, zero3)
    lines = "\n".join(health_lines(run_health(resumed)))
    assert "resharded at step 2: world size 2 -> 2 (zero3 -> fsdp), grad_accum 1 -> 1" in lines

    # What cannot be resharded is refused at the dry run, saying why and what to do.
    for overrides, why in ((["cluster.nproc_per_node=1", "parallelism=zero3"], "DeepSpeed ZeRO checkpoint"),
                           (["cluster.nproc_per_node=2", "parallelism=ddp"], "DeepSpeed ZeRO checkpoint"),
                           (["cluster.nproc_per_node=2", "parallelism=zero2"], "ZeRO stages lay out")):
        cfg = compose_config([f"run.output_root={root}", *COMMON, *overrides, f"run.resume={step2}"], check=False)
        with pytest.raises(PreflightError, match=rf"run\.resume: step-0000002 was written with world size 2.*{why}"
                           r".*`launcher export` the run and start a new run from the export"):
            run_preflight(cfg)


def test_global_batch_that_cannot_divide_is_refused():
    meta = {"world_size": 2, "micro_batch_size": 4, "grad_accum": 1}
    assert kept_grad_accum(meta, 4, 1) == 2 and kept_grad_accum(meta, 2, 4) == 1
    with pytest.raises(ConfigError, match=r"global batch 8 .* at world size 3 .*\(8 is not a multiple of 12\):"
                       r" resume on a world size that divides 8 \(1, 2, 4, 8\)"):
        kept_grad_accum(meta, 4, 3)


def test_ledger_plan_continues_the_epoch_at_any_world():
    """Pure: after k steps at world 2, the rest of the epoch at world 1 or 4 (same global batch) trains the rows
    the uninterrupted plan would, each once."""
    n, seed, k = 50, 7, 2
    full = [epoch_plan(n, seed, 0, r, 2, 2, 2) for r in range(2)]
    done = [i for s in range(k) for r in range(2) for mb in full[r][s] for i in mb]
    for world, accum in ((1, 4), (4, 1)):
        rest = [epoch_plan(n, seed, 0, r, world, 2, accum, trained=done, first_step=k) for r in range(world)]
        for s in range(k, len(full[0])):
            want = sorted(i for r in range(2) for mb in full[r][s] for i in mb)
            assert sorted(i for r in range(world) for mb in rest[r][s] for i in mb) == want
        after = [i for r in range(world) for s in rest[r] for mb in s for i in mb]
        assert len(done + after) == len(set(done + after)) == 6 * 8


def test_a_grad_accum_given_at_resume_that_the_kept_global_batch_overrides_is_said():
    meta = {"world_size": 2, "micro_batch_size": 4, "grad_accum": 1}
    assert ignored_grad_accum(1, meta, 2, 8) is None and ignored_grad_accum(2, meta, 2, 8) is None
    line = ignored_grad_accum(4, meta, 2, 8)
    assert line.startswith("train.grad_accum=4 is not used") and "global batch 8" in line and "export" in line
