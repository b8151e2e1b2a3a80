"""cluster.preprocess=job: the data is tokenized in a CPU job, and the training job starts after it and maps the
store (same cache key: its log says cache_hit=True). The dry run shows both scripts."""
from __future__ import annotations

import json
import subprocess

from launcher.config.compose import compose_config
from launcher.launch.slurm_submit import render_plan
from tests.resume.test_preemption_slurm import launch, node_logs, wait_done

FAST = ["train.max_steps=2", "train.save_every=0", "train.save_model=false"]


def test_dry_run_shows_the_data_job_and_the_dependent_training_job(tmp_path):
    cfg = compose_config(["cluster=slurm_local", "cluster.preprocess=job", "cluster.gpus_per_node=1"])
    plan = render_plan(cfg, tmp_path / "run")
    data, train = plan.split("# sbatch script", 1)
    assert "#SBATCH --job-name=tiny-qwen2-sft_full-tasks-data" in data and "--gpus-per-node" not in data
    assert "#SBATCH --dependency=afterok:DATA_JOB_ID" in train and "#SBATCH --gpus-per-node=1" in train


def sacct_times(job_id: str) -> tuple:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,Start,End"], capture_output=True,
                         text=True, check=True, timeout=30).stdout.split()[0]
    return tuple(out.split("|"))


def test_the_training_job_starts_after_the_data_job_and_tokenizes_nothing(slurm_cluster, runs_root):
    run_dir, job_id = launch(runs_root, [*FAST, "cluster.preprocess=job", f"data.cache_dir={runs_root / 'cache'}"])
    assert wait_done(run_dir, job_id, timeout_s=300) == "COMPLETED", node_logs(run_dir)[-4000:]
    data_job = json.loads((run_dir / "slurm_job.json").read_text())["data_job_id"]
    data_state, _, data_end = sacct_times(data_job)
    _, train_start, _ = sacct_times(job_id)
    assert data_state == "COMPLETED" and train_start >= data_end, (data_end, train_start)
    data_log = "".join(p.read_text() for p in (run_dir / "slurm").glob(f"{data_job}_*_log.*"))
    train_log = "".join(p.read_text() for p in (run_dir / "slurm").glob(f"{job_id}_*_log.*"))
    assert "[launcher] data store built in " in data_log
    assert "cache_hit=True" in train_log and "cache_hit=False" not in train_log
    print(f"\ndata job {data_job} ended {data_end}, training job {job_id} started {train_start} and mapped the store")
