"""Where a training step spends its time, for one or more checkouts alternated: torch.profiler over the steady steps
of ``launcher bench experiment=bench_reference`` (the steps after the first), op by op, with the process's CPU
seconds and minor page faults per step (a fresh large tensor is pages the kernel faults in and zeroes).

    python tests/benchmarks/bench_step_profile.py [--tree OLD_CHECKOUT] [--steps 6] [--rounds 1] [--top 25]

Each checkout (this one first, then every ``--tree``) runs in a process of its own with that checkout first on
PYTHONPATH, in turns. Printed per checkout: the steady seconds per step, then the ops with the most self CPU
time (their share of the profiled CPU time, calls per step, and self ms per step), and the matmuls by input
shape (calls per step). On a loaded machine the seconds drift with the load; the op counts, shapes and shares
do not: compare those between checkouts, and seconds only within one round.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs with the checkout first on PYTHONPATH: argv[1] = JSON settings; prints one PROFILE_RESULT JSON line.
CHILD = r'''
import json, resource, sys, time
from collections import defaultdict
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule
settings = json.loads(sys.argv[1])
steps = settings["steps"]
marks = []
prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True,
               schedule=schedule(wait=1, warmup=0, active=steps - 1, repeat=1))

def after_step(optimizer, args, kwargs):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    marks.append((time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_minflt))
    prof.step()

register_optimizer_step_post_hook(after_step)
from launcher.cli import main
with prof:
    main(["bench", "experiment=bench_reference", "data.dataset_dir=" + settings["dataset_dir"], "--steps",
          str(steps), "--out", settings["out"]])
events = prof.key_averages()
total = sum(e.self_cpu_time_total for e in events) or 1
n = max(len(marks) - 1, 1)
ops = sorted(({"name": e.key, "share": e.self_cpu_time_total / total, "calls": e.count / n,
               "self_ms": e.self_cpu_time_total / 1e3 / n} for e in events), key=lambda r: -r["share"])
shapes = defaultdict(float)
for e in prof.key_averages(group_by_input_shape=True):
    if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul",
                 "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention"):
        shapes[e.key + " " + str(e.input_shapes)] += e.count / n
report = json.loads(open(settings["out"]).read())
steady = [[b[i] - a[i] for i in range(3)] for a, b in zip(marks, marks[1:])]  # marks start after the first step
print("PROFILE_RESULT " + json.dumps({"step_s": [s[0] for s in steady], "cpu_s": [s[1] for s in steady],
                                      "minflt": [s[2] for s in steady], "ops": ops[:settings["top"]],
                                      "shapes": dict(shapes), "bench": report}))
'''


def find_dataset_dir(tree: Path) -> Path:
    for parent in [tree, *tree.parents]:
        candidate = parent / "shared" / "datasets" / "llamafactory-demo"
        if (candidate / "dataset_info.json").is_file():
            return candidate
    raise SystemExit("no shared/datasets/llamafactory-demo above the checkout: pass --dataset-dir")


def profile_tree(tree: Path, steps: int, top: int, dataset_dir: Path, env: dict, out: Path) -> dict:
    settings = json.dumps({"steps": steps, "top": top, "dataset_dir": str(dataset_dir), "out": str(out)})
    proc = subprocess.run([sys.executable, "-P", "-c", CHILD, settings], cwd=tree, capture_output=True, text=True,
                          env=dict(env, PYTHONPATH=str(tree)))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROFILE_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{tree} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("PROFILE_RESULT "):])


def print_profile(tag: str, result: dict) -> None:
    step_s, cpu_s, minflt = result["step_s"], result["cpu_s"], result["minflt"]
    bench = result["bench"]
    print(f"\n== {tag}: steady s/step {sum(step_s) / len(step_s):.3f}, CPU s/step {sum(cpu_s) / len(cpu_s):.3f}, "
          f"minor page faults/step {sum(minflt) / len(minflt):,.0f} (profiled: the profiler adds its own cost), "
          f"bench non-pad tok/s {bench['non_pad_tokens_per_s']:.1f}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'op':<48} {'share':>6} {'calls/step':>10} {'self ms/step':>12}")
    for op in result["ops"]:
        print(f"{op['name'][:48]:<48} {op['share']:6.1%} {op['calls']:10.1f} {op['self_ms']:12.1f}")
    print("matmuls and attention by input shape (calls/step):")
    for key, calls in sorted(result["shapes"].items(), key=lambda kv: -kv[1]):
        print(f"  {calls:7.1f}  {key}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another checkout (repeatable)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dataset-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: usable CPUs)")
    args = parser.parse_args()
    trees = [REPO, *(t.resolve() for t in args.tree)]
    dataset_dir = (args.dataset_dir or find_dataset_dir(REPO)).resolve()
    threads = args.threads or len(os.sched_getaffinity(0))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        for rnd in range(args.rounds):
            for i, tree in enumerate(trees):
                result = profile_tree(tree, args.steps, args.top, dataset_dir, env, Path(tmp) / f"bench{i}.json")
                print_profile(f"round {rnd + 1} {tree}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
