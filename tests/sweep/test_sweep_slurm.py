"""Sweeps on the real test cluster (slurm/start-cluster.sh): a 4-point LoRA grid goes in as ONE job array and
the report lists every point with its losses; a point that passes the preflight but fails at run time shows
as failed with its reason while the other point finishes; a bad point refuses the sweep before any sbatch.

Both sweeps are submitted once, at the start of the module, and run side by side (the cluster has 4 CPUs).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from launcher.errors import PreflightError
from launcher.slurm.jobs import TERMINAL_STATES
from launcher.launch.sweep_launch import launch_sweep
from launcher.sweep.plan import SWEEP_FILE
from launcher.sweep.report import report_main, sweep_rows

TINY = ["cluster=slurm_local", "train.exact_match_samples=0", "cluster.nproc_per_node=1", "method=lora", "train.max_steps=5",
        "train.log_every=1", "train.eval_every=0", "data.max_samples=100", "train.eval_max_batches=2"]


def _known_job_ids() -> set:
    squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    sacct = subprocess.run(["sacct", "-n", "-X", "-a", "-S", "2000-01-01", "-o", "JobID"], capture_output=True,
                           text=True, check=True).stdout
    return set(squeue.split()) | set(sacct.split())


def wait_until_done(sweep_dir: Path, timeout_s: float = 200) -> list:
    deadline = time.time() + timeout_s
    while True:
        _, rows = sweep_rows(sweep_dir)
        if all(r["state"] in TERMINAL_STATES for r in rows):
            return rows
        if time.time() > deadline:
            raise AssertionError(f"sweep {sweep_dir} not done after {timeout_s} s: {[r['state'] for r in rows]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def sweeps(slurm_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    started = time.time()
    grid = launch_sweep([*TINY, f"run.output_root={root}", "method.lr=1e-3,3e-3", "method.lora.r=4,8"],
                        name="lora-grid", quiet=True)
    submit_s = time.time() - started
    _, early_rows = sweep_rows(grid["sweep_dir"])  # the report works right after submission
    # 4 rows are fewer than one global batch of 8: the preflight cannot know how many rows a dataset
    # yields after tokenization and caps, so this point is queued and fails when it builds its batches.
    failing = launch_sweep([*TINY, f"run.output_root={root}", "data.max_samples=4,100"], name="with-a-failure",
                           quiet=True)
    yield {"grid": grid, "failing": failing, "submit_s": submit_s, "early_rows": early_rows}
    ids = [a["array_job_id"] for s in (grid, failing) for a in s["arrays"]]
    subprocess.run(["scancel", *ids], capture_output=True, check=False)


def test_four_points_are_one_array(sweeps):
    grid = sweeps["grid"]
    assert sweeps["submit_s"] < 60, "launch_sweep must return once queued, not wait for the jobs"
    assert len(grid["arrays"]) == 1
    array_id = grid["arrays"][0]["array_job_id"]
    data = json.loads((grid["sweep_dir"] / SWEEP_FILE).read_text())
    assert [p["job_id"] for p in data["points"]] == [f"{array_id}_{i}" for i in range(4)]
    assert [p["array_task"] for p in data["points"]] == [0, 1, 2, 3]
    assert "#SBATCH --array=0-3%4" in Path(grid["arrays"][0]["script"]).read_text()
    early = [r["state"] for r in sweeps["early_rows"]]
    assert len(early) == 4 and set(early) <= {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "COMPLETED"}, early
    rows = wait_until_done(grid["sweep_dir"])
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,State"], capture_output=True,
                          text=True, check=True).stdout.split()
    assert sorted(line.split("|")[0] for line in acct) == [f"{array_id}_{i}" for i in range(4)], acct
    assert [r["state"] for r in rows] == ["COMPLETED"] * 4, [(r["state"], r["error"]) for r in rows]


def test_report_lists_every_point_with_losses(sweeps, capsys):
    sweep_dir = sweeps["grid"]["sweep_dir"]
    wait_until_done(sweep_dir)
    out_png = sweep_dir / "lr.png"
    assert report_main([str(sweep_dir), "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line[:1].isdigit() and "COMPLETED" in line]
    assert len(lines) == 4, out
    for lr, r in (("0.001", "4"), ("0.001", "8"), ("0.003", "4"), ("0.003", "8")):
        assert any(line.split()[1:3] == [lr, r] for line in lines), out
    _, rows = sweep_rows(sweep_dir)
    for row in rows:
        assert row["final_train_loss"] > 0 and row["final_eval_loss"] > 0 and row["best_eval_step"] == 5
        assert row["step"] == 5
    assert out_png.stat().st_size > 1000
    # Each point is also a run dir the single-run commands understand.
    point = sweep_dir / json.loads((sweep_dir / SWEEP_FILE).read_text())["points"][0]["run_dir"]
    assert json.loads((point / "slurm_job.json").read_text())["job_id"] == rows[0]["job_id"]
    assert (point / "config.yaml").exists() and "lora-grid" in (point / "config.yaml").read_text()


def test_failed_point_shows_its_reason_while_the_other_finishes(sweeps, capsys):
    failing = sweeps["failing"]
    rows = wait_until_done(failing["sweep_dir"])
    assert [r["state"] for r in rows] == ["FAILED", "COMPLETED"], [(r["state"], r["error"]) for r in rows]
    assert "fewer than one global batch" in rows[0]["error"], rows[0]["error"]
    assert rows[1]["final_eval_loss"] is not None
    assert report_main([str(failing["sweep_dir"])]) == 1
    out = capsys.readouterr().out
    assert "1 completed, 1 failed" in out
    assert "point 0 failed: error: data: 4 training rows are fewer than one global batch" in out, out


def test_bad_point_refuses_before_any_submission(slurm_cluster, runs_root):
    before = _known_job_ids()
    with pytest.raises(PreflightError, match=r"point 1 \(data.datasets=\[nope\]\)"):
        launch_sweep([*TINY, f"run.output_root={runs_root}", "data.datasets=[tasks],[nope]"], quiet=True)
    assert list(runs_root.iterdir()) == []
    assert _known_job_ids() - before == set()


def test_an_array_sbatch_refuses_names_what_is_queued(slurm_cluster, runs_root):
    """Two shapes: the CPU point is queued (held); the one asking for a GPU is refused by sbatch (none here).

    No partition is named, so the preflight cannot hold the request against a partition's GPUs (it refuses that
    for a named one) and sbatch is the one to say no."""
    from launcher.errors import LauncherError

    with pytest.raises(LauncherError) as err:
        launch_sweep([*TINY, f"run.output_root={runs_root}", "cluster.partition=null", "cluster.gpus_per_node=0,1",
                      "cluster.sbatch_extra.hold=true"], quiet=True)
    text = str(err.value)
    assert "sbatch refused the job array of points 1" in text, text
    queued = re.search(r"already queued: job array\(s\) (\d+)", text)
    assert queued, text
    subprocess.run(["scancel", queued.group(1)], check=False)
    data = json.loads(next(runs_root.glob(f"sweeps/*/*/*/{SWEEP_FILE}")).read_text())
    assert [a["array_job_id"] for a in data["arrays"]] == [queued.group(1)]
    assert data["points"][1]["job_id"] is None
