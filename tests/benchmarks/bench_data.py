"""Data pipeline benchmark: preprocessing at scale, the cache, and what a loading rank costs.

    PYTHONPATH=. python tests/benchmarks/bench_data.py [--rows 200000] [--cutoff 1024] [--packing]
    PYTHONPATH=. python tests/benchmarks/bench_data.py --fill [--cutoff 1024] [--dataset alpaca_en_demo]

Builds a ``--rows``-row alpaca set (LLaMA-Factory's alpaca_en_demo repeated) in a temp dir and prints, with
the Qwen tokenizer:
- preprocessing rows/s with 1 worker and with all cores (read, format, render, tokenize, write the cache),
  and rows per CPU-second (user + system time of the process and its workers), which a busy shared
  machine distorts far less than wall time;
- peak memory while preprocessing: the sum of the process tree's PSS (shared pages counted once), sampled,
  in a run of its own (sampling costs CPU, so the timed runs are not sampled);
- the cache's size on disk;
- cache-hit load time (build_datasets finding the cache), in a fresh process;
- the RSS a loading rank adds: two processes load the cache at once, each reports its RSS before
  build_datasets, after it, and after reading 1000 rows.
Each measurement runs in its own process, so imports and earlier builds do not count.
``--fill``: packing fill on one demo dataset (target >= 99%), the benchmark this file had before.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.big_alpaca import write_big_set  # noqa: E402
from tests.data.helpers import lf_demo_dir, make_config, qwen_tokenizer  # noqa: E402

MB = 1 << 20


def tree_pss(pid: int) -> int:
    import psutil

    total = 0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_child(args: list[str], sample_memory: bool = False) -> dict:
    """Run this script as a child; returns its JSON line (+ peak tree PSS when sampled)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    out, _ = proc.communicate()
    if sample_memory:
        sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    if sample_memory:
        result["peak_pss"] = peak[0]
    return result


def child_build(folder: str, cache: str, num_proc: int, cutoff: int, packing: bool) -> dict:
    from launcher.data import build_datasets

    tok = qwen_tokenizer()
    cfg = make_config(folder, ["alpaca_big"], cutoff_len=cutoff, packing=packing, cache_dir=cache, num_proc=num_proc)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    bundle = build_datasets(cfg, tok, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu": cpu_seconds() - cpu0, "samples": bundle.stats["samples"],
            "tokens": bundle.stats["tokens"], "rows": len(bundle.train), "fill": bundle.stats.get("packing_fill")}


def cpu_seconds() -> float:
    """User + system time of this process and its finished children (the workers)."""
    import resource

    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def child_load(folder: str, cache: str, cutoff: int, packing: bool) -> dict:
    import psutil
    import torch  # noqa: F401  (a training rank has it already; its import is not the data's cost)

    from launcher.data import build_datasets
    from launcher.data.collate import make_collate  # noqa: F401  (same)

    tok = qwen_tokenizer()
    cfg = make_config(folder, ["alpaca_big"], cutoff_len=cutoff, packing=packing, cache_dir=cache)
    me = psutil.Process()
    before = me.memory_info().rss
    start = time.perf_counter()
    bundle = build_datasets(cfg, tok, progress=False)
    seconds = time.perf_counter() - start
    after = me.memory_info().rss
    rows = [bundle.train[i] for i in range(min(1000, len(bundle.train)))]
    batch = bundle.collate(rows[:8])
    touched = me.memory_info().rss
    assert bundle.stats["cache_hit"] and batch["input_ids"].shape[0] == 8
    return {"seconds": seconds, "rss_before": before, "rss_added": after - before, "rss_after_1000_rows": touched - before}


def fill_bench(args) -> int:
    from launcher.data import build_datasets

    demo = lf_demo_dir()
    cfg = make_config(demo, [args.dataset], cutoff_len=args.cutoff, packing=True, use_cache=False)
    start = time.perf_counter()
    bundle = build_datasets(cfg, qwen_tokenizer(), progress=False)
    cold = time.perf_counter() - start
    s = bundle.stats
    positions = len(bundle.train) * args.cutoff
    print(f"dataset={args.dataset} cutoff={args.cutoff} template={s['template']}")
    print(f"samples={s['samples']} tokens={s['tokens']} trained_tokens={s['trained_tokens']} rows={len(bundle.train)}")
    print(f"packing fill: {s['tokens']}/{positions} = {100 * s['tokens'] / positions:.2f}%")
    print(f"cold preprocessing: {cold:.2f} s, {s['samples'] / cold:.0f} samples/s")
    return 0


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--procs", default=None, help="comma-separated worker counts (default: 1 and all cores)")
    parser.add_argument("--fill", action="store_true", help="packing fill on --dataset instead")
    parser.add_argument("--dataset", default="alpaca_en_demo")
    parser.add_argument("--child", choices=("build", "load"))
    parser.add_argument("--dir")
    parser.add_argument("--cache")
    parser.add_argument("--num-proc", type=int, default=1)
    args = parser.parse_args()
    if args.child == "build":
        print(json.dumps(child_build(args.dir, args.cache, args.num_proc, args.cutoff, args.packing)))
        return 0
    if args.child == "load":
        print(json.dumps(child_load(args.dir, args.cache, args.cutoff, args.packing)))
        return 0
    if lf_demo_dir() is None:
        print("LLaMA-Factory demo data not found; set LAUNCHER_LF_DEMO_DIR")
        return 1
    if args.fill:
        return fill_bench(args)
    from launcher.data.workers import default_num_proc

    procs = [int(p) for p in args.procs.split(",")] if args.procs else sorted({1, default_num_proc()})
    common = ["--cutoff", str(args.cutoff)] + (["--packing"] if args.packing else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        write_big_set(folder, args.rows)
        size = (folder / "alpaca_big.json").stat().st_size
        print(f"{args.rows} alpaca rows ({size / MB:.0f} MB of JSON), cutoff {args.cutoff}, packing={args.packing},"
              f" Qwen tokenizer, {default_num_proc()} CPUs; loadavg {os.getloadavg()[0]:.1f} at start")
        cache = None
        for n in procs:
            cache = Path(tmp) / f"cache{n}"
            r = run_child(["--child", "build", "--dir", str(folder), "--cache", str(cache), "--num-proc", str(n),
                           *common])
            fill = f", fill {100 * r['fill']:.2f}%" if r["fill"] else ""
            print(f"preprocess num_proc={n}: {r['seconds']:.1f} s, {r['samples'] / r['seconds']:.0f} rows/s,"
                  f" {r['cpu']:.1f} CPU-s ({r['samples'] / r['cpu']:.0f} rows per CPU-second);"
                  f" {r['tokens']} tokens in {r['rows']} rows{fill}")
        # Memory in a run of its own: reading every process's smaps 4 times a second takes CPU from the workers
        # (on 2 cores, enough to move the timing above by several percent).
        n = max(procs)
        r = run_child(["--child", "build", "--dir", str(folder), "--cache", str(Path(tmp) / "cache-mem"),
                       "--num-proc", str(n), *common], sample_memory=True)
        print(f"peak PSS while preprocessing (num_proc={n}, process and workers, shared pages counted once):"
              f" {r['peak_pss'] / MB:.0f} MB")
        print(f"cache on disk: {du(cache) / MB:.0f} MB")
        load = ["--child", "load", "--dir", str(folder), "--cache", str(cache), *common]
        r = run_child(load)
        print(f"cache hit (1 process): {r['seconds']:.2f} s, RSS +{r['rss_added'] / MB:.0f} MB"
              f" (+{r['rss_after_1000_rows'] / MB:.0f} MB after reading 1000 rows)")
        pair = [subprocess.Popen([sys.executable, __file__, *load], stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for k, p in enumerate(pair):
            out, _ = p.communicate()
            r = json.loads(out.strip().splitlines()[-1])
            print(f"cache hit (rank {k} of 2 loading at once): {r['seconds']:.2f} s, RSS +{r['rss_added'] / MB:.0f} MB"
                  f" (+{r['rss_after_1000_rows'] / MB:.0f} MB after reading 1000 rows; {r['rss_before'] / MB:.0f} MB"
                  f" before: interpreter, torch, tokenizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
