"""How long submitting a 100-point sweep takes: expand, compose, preflight, write run dirs, sbatch.

    source /var/tmp/launcher-slurm/env.sh   # or: bash slurm/start-cluster.sh
    PYTHONPATH=. python tests/benchmarks/bench_sweep_submit.py [--points 100] [--keep]

The sweep is LoRA rank 1..10 x 10 seeds on cluster=slurm_local, submitted held (sbatch --hold) so that no
task runs, and cancelled afterwards (unless --keep). Target: seconds, not minutes.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.launch.sweep_launch import launch_sweep  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100, help="rounded to a square grid (ranks x seeds)")
    parser.add_argument("--keep", action="store_true", help="leave the array queued (held) and the sweep dir")
    args = parser.parse_args()
    if shutil.which("sbatch") is None or not os.environ.get("SLURM_CONF"):
        print("no SLURM here: run slurm/start-cluster.sh and `source /var/tmp/launcher-slurm/env.sh` first")
        return 1
    side = max(1, int(math.isqrt(args.points)))
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    overrides = [
        "cluster=slurm_local", f"run.output_root={root}", "method=lora", "train.max_steps=5",
        f"method.lora.r=range(1,{side + 1})", f"train.seed=range(0,{side})",
        # Held: the benchmark measures queueing, not training; cancelled below.
        "cluster.sbatch_extra.hold=true", "cluster.array_parallelism=4",
    ]
    timings: dict = {}
    start = time.perf_counter()
    result = launch_sweep(overrides, name="bench-submit", timings=timings, quiet=True)
    total = time.perf_counter() - start
    arrays = result["arrays"]
    n = len(result["points"])
    tasks = sum(a["tasks"] for a in arrays)
    print(f"sweep of {n} points -> {len(arrays)} job array(s), {tasks} task(s): "
          + ", ".join(f"{a['array_job_id']} (--array=0-{a['tasks'] - 1}%{a['parallelism']})" for a in arrays))
    for key in ("expand_s", "compose_s", "preflight_s", "write_s", "submit_s"):
        value = timings.get(key, 0.0)
        print(f"  {key[:-2]:<10} {value:7.2f} s   ({1000 * value / max(n, 1):6.1f} ms/point)")
    other = total - sum(timings.get(k, 0.0) for k in ("expand_s", "compose_s", "preflight_s", "write_s", "submit_s"))
    print(f"  {'other':<10} {other:7.2f} s   (one-time imports: hydra, torch via the preflight's data code)")
    print(f"  {'total':<10} {total:7.2f} s")
    queued = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(a["array_job_id"] for a in arrays), "-o", "%i"],
                            capture_output=True, text=True, check=False).stdout.split()
    print(f"  squeue sees {len(queued)} task(s) of the array(s)")
    if not args.keep:
        subprocess.run(["scancel", *[a["array_job_id"] for a in arrays]], check=False)
        shutil.rmtree(root, ignore_errors=True)
        print("  cancelled and removed")
    else:
        print(f"  kept: {result['sweep_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
