"""Data pipeline benchmark: packing fill and preprocessing throughput on alpaca_en_demo, Qwen tokenizer.

    PYTHONPATH=. python tests/benchmarks/bench_data.py [--cutoff 1024] [--dataset alpaca_en_demo]

Fill = real tokens / positions of cutoff-length rows (target >= 99%). Throughput = samples/s of a cold
build (read, render, tokenize, pack; cache off), and the time of a warm build from the cache.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.data import build_datasets  # noqa: E402
from tests.data.helpers import lf_demo_dir, make_config, qwen_tokenizer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--dataset", default="alpaca_en_demo")
    args = parser.parse_args()
    demo = lf_demo_dir()
    if demo is None:
        print("LLaMA-Factory demo data not found; set LAUNCHER_LF_DEMO_DIR")
        return 1
    tok = qwen_tokenizer()
    cfg = make_config(demo, [args.dataset], cutoff_len=args.cutoff, packing=True, use_cache=False)
    start = time.perf_counter()
    bundle = build_datasets(cfg, tok, progress=False)
    cold = time.perf_counter() - start
    s = bundle.stats
    positions = len(bundle.train) * args.cutoff
    print(f"dataset={args.dataset} cutoff={args.cutoff} template={s['template']}")
    print(f"samples={s['samples']} tokens={s['tokens']} trained_tokens={s['trained_tokens']} rows={len(bundle.train)}")
    print(f"packing fill: {s['tokens']}/{positions} = {100 * s['tokens'] / positions:.2f}%")
    print(f"cold preprocessing: {cold:.2f} s, {s['samples'] / cold:.0f} samples/s")
    with tempfile.TemporaryDirectory() as cache_dir:
        cached_cfg = make_config(demo, [args.dataset], cutoff_len=args.cutoff, packing=True, cache_dir=cache_dir)
        build_datasets(cached_cfg, tok, progress=False)
        start = time.perf_counter()
        warm = build_datasets(cached_cfg, tok, progress=False)
        print(f"warm (cache hit={warm.stats['cache_hit']}): {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
