"""cluster.preprocess=job on the test cluster with the 200k-row alpaca set: how long the CPU data job takes,
that the training job starts after it, and how long the training ranks take to load the store (summary.json's
startup_seconds["data"], rank 0: tokenizer-to-data, i.e. mapping the cache) with no tokenization in their log.

    source /var/tmp/launcher-slurm/env.sh
    PYTHONPATH=. python tests/benchmarks/bench_data_job.py [--rows 200000]

Not run by CI (it tokenizes 200k rows); prints the figures.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.big_alpaca import NAME, demo_dir, write_big_set


def sacct(job_id: str) -> dict:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,Start,End,Elapsed"],
                         capture_output=True, text=True, check=True, timeout=30).stdout.split()[0]
    return dict(zip(("state", "start", "end", "elapsed"), out.split("|")))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    if demo_dir() is None:
        print("skipped: LLaMA-Factory's demo data (../shared/datasets/llamafactory-demo) is absent")
        return 0
    from launcher.config.compose import compose_config, default_run_name
    from launcher.launch.rundir import make_run_dir, write_run_config
    from launcher.launch.slurm_submit import submit_run
    from launcher.slurm.jobs import TERMINAL_STATES, job_state

    root = Path(tempfile.mkdtemp(prefix="bench-data-job-"))
    (root / "data").mkdir()
    write_big_set(root / "data", args.rows)
    cfg = compose_config(["cluster=slurm_local", "cluster.nproc_per_node=2", "cluster.preprocess=job",
                          f"data.dataset_dir={root / 'data'}", f"data.datasets=[{NAME}]", "data.eval_datasets=[]",
                          f"data.cache_dir={root / 'cache'}", "train.max_steps=2", "train.save_model=false",
                          "train.eval_every=0", "cluster.time_min=30", f"run.output_root={root / 'runs'}"])
    run_dir = make_run_dir(root / "runs", default_run_name(cfg))
    write_run_config(run_dir, cfg)
    info = submit_run(cfg, run_dir, quiet=True)
    train_id, data_id = info["job_id"], info["data_job_id"]
    while job_state(train_id)["state"] not in TERMINAL_STATES:
        time.sleep(2)
    data, train = sacct(data_id), sacct(train_id)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    train_log = "".join(p.read_text() for p in (run_dir / "slurm").glob(f"{train_id}_*_log.*"))
    print(f"rows: {args.rows}")
    print(f"data job {data_id}: {data['state']}, {data['start']} -> {data['end']} (elapsed {data['elapsed']})")
    print(f"training job {train_id}: {train['state']}, started {train['start']} (after the data job: "
          f"{train['start'] >= data['end']})")
    print(f"training rank 0 data phase (mapping the store): {summary.get('startup_seconds', {}).get('data')} s")
    print(f"training log: cache_hit=True {'cache_hit=True' in train_log}, cache_hit=False {'cache_hit=False' in train_log}")
    return 0 if train["state"] == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
