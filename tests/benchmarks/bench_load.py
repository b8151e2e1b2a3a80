"""Benchmark: peak RSS per rank of a ~0.35B Qwen2-shaped bf16 model on 2 gloo ranks, loaded and through its
first step (cutoff 256), under DDP, FSDP and ZeRO-3, with where each rank's peak goes (issue 32: memory per
rank falls with ranks). Loading is also checked against the bound of tests/parallel/sharded_load.py.

    PYTHONPATH=. python tests/benchmarks/bench_load.py [--out DIR] [--cases ddp-lora,fsdp-lora,zero3-lora,fsdp,zero3]
        [--evaluations]

Per case: the largest rank's peak (absolute RSS, imports included), each phase's RSS (start, peak, end above the
RSS before the model), and the breakdown of tests/parallel/sharded_load.breakdown. ``--evaluations`` keeps the
held-out passes before and after the step (slow: they score every held-out row). RSS, not time, is what it
reports (wall seconds depend on the machine's load). Needs about 2 x 3 GB of RAM for the LoRA cases (2 x 4.5 GB
for full fine-tunes: AdamW state); run one case at a time on a small machine. The folder takes ~0.7 GB of disk.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

LORA_LIMIT = 2.0e9
"""Issue 32: the largest rank of a sharded LoRA run of this model at most 2.0 GB."""


def where(parts: dict) -> str:
    """One line: the peak, its phase and its parts in MiB."""
    shown = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in parts.items() if k not in ("peak", "phase"))
    return f"  peak {parts['peak'] / 2**20:.0f} MiB in {parts['phase']}: {shown} MiB"


def main(argv=None) -> int:
    from tests.parallel.sharded_load import (BENCH, LOADING_PHASES, bound, breakdown, make_model_folder, measured,
                                             model_shape, phase_lines, plain_logits, run_load)

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "launcher-bench-load")
    parser.add_argument("--cases", default="ddp-lora,fsdp-lora,zero3-lora")
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--evaluations", action="store_true")
    parser.add_argument("--steps", type=int, default=1,
                        help="optimizer steps to train (the peak over all; ZeRO-3 may keep gathered parameters once"
                             " it has traced a step)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = make_model_folder(args.out / "qwen2-0.35b-bf16", BENCH)
    shape = model_shape(folder)
    print(f"model: {shape.params / 1e6:.0f}M parameters (fp32 {4 * shape.params / 2**20:.0f} MiB, bf16 file"
          f" {2 * shape.params / 2**20:.0f} MiB), largest tensor {shape.largest_param / 1e6:.1f}M, largest unit"
          f" {shape.largest_unit / 1e6:.1f}M; cutoff {args.cutoff}, 2 ranks")
    want = plain_logits(folder)
    for case in args.cases.split(","):
        strategy, _, lora = case.partition("-")
        overrides = [f"parallelism={strategy}", f"data.cutoff_len={args.cutoff}", f"train.max_steps={args.steps}",
                     *(["method=lora"] if lora else [])]
        run_dir, ranks = run_load(args.out / "runs", case, folder, overrides, evaluations=args.evaluations)
        parts = [breakdown(r) for r in ranks]
        largest = max(range(len(ranks)), key=lambda i: parts[i]["peak"])
        peak = parts[largest]["peak"]
        verdict = "" if not lora or strategy == "ddp" else \
            f" ({'within' if peak <= LORA_LIMIT else 'ABOVE'} the {LORA_LIMIT / 1e9:.1f} GB of issue 32)"
        each = ", ".join(f"{p['peak'] / 1e9:.2f}" for p in parts)
        print(f"\n{case}: largest rank {largest}, peak {peak / 1e9:.2f} GB ({peak / 2**20:.0f} MiB){verdict};"
              f" ranks: {each} GB")
        for rank, r in enumerate(ranks):
            print(f" rank {rank}, phases (RSS before the model {r['rss_before_model_kib'] / 1024:.0f} MiB):")
            print("\n".join(phase_lines(r)))
            print(where(parts[rank]))
            if parts[rank]["phase"] in LOADING_PHASES:
                print(where(breakdown(r, after_loading=True)))
        if strategy != "ddp":
            over = [r for r in ranks if measured(r, strategy, "load") > bound(shape, strategy, bool(lora), "load")]
            print(f" loading: +{max(measured(r, strategy, 'load') for r in ranks) / 2**20:.0f} MiB, bound"
                  f" {bound(shape, strategy, bool(lora), 'load') / 2**20:.0f} MiB{' ABOVE THE BOUND' if over else ''}")
        diff = (torch.load(run_dir / "load_logits.pt") - want).abs().max().item()
        print(f" logits vs plain single-process load: max |diff| {diff:.1e}; wall {ranks[0]['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
