"""Two checkouts' training steps, run in turns (A B A B ...), with where each step's time went.

    python tests/benchmarks/bench_ab.py --old ../speed-old --new . [--pairs 3] [--steps 10] [--threads N] \
        [-- OVERRIDES...]

Each run is ``launcher bench experiment=bench_reference --steps N`` (plus OVERRIDES) in a process of its own,
with the checkout first on PYTHONPATH and its own directory as the working directory, so each imports its own
code (older checkouts have the recipes in ``recipes/``, newer ones in ``launcher/training``; both work). On a
shared machine absolute figures drift with the load: compare the runs of one pair (they ran minutes apart) and
the medians of the per-pair ratios, not figures from different invocations.

Besides the bench's own report, each run times the parts of every step after the first, in wall seconds and in
CPU seconds of the whole process (CPU time is what the step costs; wall time also counts waiting for a core):
``data`` (rows read and collated), ``forward`` (the loss module: model + LM head + cross-entropy), ``backward``,
``optimizer`` (clip, step, schedule, zero_grad) and ``other`` (the rest of the step). The loss of each step is
printed too, so a change that alters training shows.

``--threads N`` sets OMP_NUM_THREADS (and torch's pool) in the runs; on a machine whose cores are busy with
other work, 1 thread gives CPU times that hardly depend on the load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("data", "forward", "backward", "optimizer", "other")

# (module, class, attribute, phase) for both layouts; what does not import is skipped.
PATCHES = [
    ("launcher.training.trainer", "Trainer", "train_step", "step"),
    ("launcher.training.trainer", "Trainer", "micro_batches_for_step", "data"),
    ("launcher.training.loss", "CausalLMLoss", "forward", "forward"),
    ("launcher.engines.base", "Engine", "backward", "backward"),
    ("launcher.engines.base", "Engine", "step", "optimizer"),
    ("recipes.sft", "SFTRecipe", "train_step", "step"),
    ("recipes.sft", "SFTRecipe", "_micro_batches_for_step", "data"),
    ("recipes.loss", "CausalLMLoss", "forward", "forward"),
    ("recipes.engine", "DDPEngine", "backward", "backward"),
    ("recipes.engine", "Engine", "step", "optimizer"),
]


def find_dataset_dir(tree: Path) -> str:
    for parent in [tree, *tree.parents]:
        candidate = parent / "shared" / "datasets" / "llamafactory-demo"
        if (candidate / "dataset_info.json").is_file():
            return str(candidate)
    raise SystemExit("no shared/datasets/llamafactory-demo above the checkout; pass data.dataset_dir=... after --")


# ---------------------------------------------------------------------------------------------- one run (child)

def child(argv: list[str], timing_out: Path) -> int:
    import importlib

    totals = {p: [0.0, 0.0] for p in PHASES + ("step",)}
    state = {"steps": 0, "losses": []}

    def wrap(fn, phase):
        def timed(*args, **kwargs):
            steady = state["steps"] > 0  # the first step pays for warm-up: not counted
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if steady:
                    totals[phase][0] += time.perf_counter() - w
                    totals[phase][1] += time.process_time() - c

        def timed_step(*args, **kwargs):
            out = timed(*args, **kwargs)
            state["steps"] += 1
            state["losses"].append(out.get("loss"))
            return out

        return timed_step if phase == "step" else timed

    patched = []
    for module, cls, attr, phase in PATCHES:
        try:
            mod = importlib.import_module(module)
            klass = getattr(mod, cls)
        except (ImportError, AttributeError):
            continue
        if not Path(mod.__file__).resolve().is_relative_to(Path.cwd().resolve()):
            continue  # an editable install's finder found it in another checkout: not this one's code
        if attr in vars(klass):
            setattr(klass, attr, wrap(vars(klass)[attr], phase))
            patched.append(f"{module}.{cls}.{attr}")

    try:
        from launcher.launch.bench import bench_main
    except ImportError:  # a checkout from before the launch package (e.g. 3d80684)
        from launcher.bench import bench_main

    rc = bench_main(argv)
    timed = {p: totals[p] for p in PHASES if p != "other"}
    step_w, step_c = totals["step"]
    timed["other"] = [step_w - sum(v[0] for v in timed.values()), step_c - sum(v[1] for v in timed.values())]
    timing_out.write_text(json.dumps({"phases": timed, "step": totals["step"], "steady_steps": state["steps"] - 1,
                                      "losses": state["losses"], "patched": patched}))
    return rc


# ---------------------------------------------------------------------------------------------- the turns (parent)

def run_one(tree: Path, overrides: list[str], steps: int, threads: int | None, work: Path, tag: str) -> dict:
    out, timing = work / f"{tag}.bench.json", work / f"{tag}.timing.json"
    env = dict(os.environ, PYTHONPATH=str(tree), TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "--child", str(timing), "--",
           *overrides, "--steps", str(steps), "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{tag}: the bench failed (exit {proc.returncode})")
    report = json.loads(out.read_text())
    report["timing"] = json.loads(timing.read_text())
    report["wall_s"] = time.perf_counter() - started
    return report


def per_step(report: dict) -> dict:
    n = max(report["timing"]["steady_steps"], 1)
    return {p: (w / n, c / n) for p, (w, c) in report["timing"]["phases"].items()}


def show(tag: str, report: dict) -> None:
    t = report["timing"]
    n = max(t["steady_steps"], 1)
    parts = "  ".join(f"{p} {w:.2f}/{c:.2f}" for p, (w, c) in per_step(report).items())
    print(f"{tag:<8} non-pad tok/s {report['non_pad_tokens_per_s']:7.1f}  trained tok/s "
          f"{report['trained_tokens_per_s']:7.1f}  step wall/cpu s {t['step'][0] / n:.3f}/{t['step'][1] / n:.3f}"
          f"  first step {report['first_step_seconds']:.2f}  to first step {report['time_to_first_step_s']:.2f}"
          f"  fill {report.get('packing_fill')}  rss {report['peak_rss_gb']:.2f} GB", flush=True)
    print(f"{'':<8} per steady step, wall/cpu s: {parts}", flush=True)
    print(f"{'':<8} losses: {' '.join(f'{x:.4f}' for x in t['losses'])}", flush=True)


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        rest = sys.argv[i + 2:]
        return child(rest[1:] if rest[:1] == ["--"] else rest, Path(sys.argv[i + 1]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout A (run first in each pair)")
    parser.add_argument("--new", type=Path, required=True, help="checkout B")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS in the runs")
    parser.add_argument("--warmup", action="store_true", help="one short unreported run of each first (caches)")
    parser.add_argument("--json", type=Path, default=None, help="write every run's report here")
    parser.add_argument("overrides", nargs="*", help="bench overrides (default: experiment=bench_reference)")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    overrides = args.overrides or ["experiment=bench_reference"]
    work = Path(tempfile.mkdtemp(prefix="bench_ab."))
    per_tree = {}
    for name, tree in trees.items():
        extra = [] if any(o.startswith("data.dataset_dir=") for o in overrides) else \
            [f"data.dataset_dir={find_dataset_dir(tree)}"]
        per_tree[name] = overrides + extra
        if args.warmup:
            run_one(tree, per_tree[name], 2, args.threads, work, f"warmup-{name}")
    print(f"old: {trees['old']}\nnew: {trees['new']}\noverrides: {overrides}, steps {args.steps}, "
          f"threads {args.threads or 'default'}, load average {os.getloadavg()[0]:.1f}", flush=True)
    runs: dict[str, list] = {"old": [], "new": []}
    for k in range(args.pairs):
        for name in ("old", "new"):
            report = run_one(trees[name], per_tree[name], args.steps, args.threads, work, f"{name}{k}")
            runs[name].append(report)
            show(f"{name}{k}", report)
        o, n = runs["old"][k], runs["new"][k]
        step_o = o["timing"]["step"][1] / max(o["timing"]["steady_steps"], 1)
        step_n = n["timing"]["step"][1] / max(n["timing"]["steady_steps"], 1)
        print(f"pair {k}: new/old non-pad tok/s {n['non_pad_tokens_per_s'] / o['non_pad_tokens_per_s']:.3f}, "
              f"CPU s per step new/old {step_n / step_o:.3f}  (load {os.getloadavg()[0]:.1f})", flush=True)
    print("medians:")
    for name in ("old", "new"):
        rs = runs[name]
        med = {p: (statistics.median(per_step(r)[p][0] for r in rs), statistics.median(per_step(r)[p][1] for r in rs))
               for p in PHASES}
        print(f"  {name}: non-pad tok/s {statistics.median(r['non_pad_tokens_per_s'] for r in rs):.1f}; per step "
              f"wall/cpu s: " + "  ".join(f"{p} {w:.3f}/{c:.3f}" for p, (w, c) in med.items()))
    ratios = [n["non_pad_tokens_per_s"] / o["non_pad_tokens_per_s"] for o, n in zip(runs["old"], runs["new"])]
    print(f"  new/old non-pad tok/s per pair: {' '.join(f'{r:.3f}' for r in ratios)}; median "
          f"{statistics.median(ratios):.3f}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
