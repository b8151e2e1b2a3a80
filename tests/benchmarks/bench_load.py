"""Benchmark: peak RSS per rank of loading a ~0.35B Qwen2-shaped bf16 model on 2 gloo ranks, and through its
first step, under FSDP and ZeRO-3 (full and LoRA), against the bound of tests/parallel/sharded_load.py, and
against DDP (every rank builds the whole model: the plain load).

    PYTHONPATH=. python tests/benchmarks/bench_load.py [--out DIR] [--cases fsdp,zero3,fsdp-lora,zero3-lora,ddp]

RSS, not time, is what it reports (wall seconds are printed but depend on the machine's load). Needs about
2 x 4.5 GB of RAM for the full fine-tunes (AdamW state), the folder ~0.7 GB of disk.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def main(argv=None) -> int:
    from tests.parallel.sharded_load import (BENCH, bound, figures, make_model_folder, measured, model_shape,
                                             plain_logits, run_load)

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "launcher-bench-load")
    parser.add_argument("--cases", default="fsdp,fsdp-lora,zero3,zero3-lora,ddp")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = make_model_folder(args.out / "qwen2-0.35b-bf16", BENCH)
    shape = model_shape(folder)
    print(f"model: {shape.params / 1e6:.0f}M parameters (fp32 {4 * shape.params / 2**20:.0f} MiB, bf16 file"
          f" {2 * shape.params / 2**20:.0f} MiB), largest tensor {shape.largest_param / 1e6:.1f}M, largest unit"
          f" {shape.largest_unit / 1e6:.1f}M")
    want = plain_logits(folder)
    for case in args.cases.split(","):
        strategy, _, lora = case.partition("-")
        overrides = [f"parallelism={strategy}", *(["method=lora"] if lora else [])]
        run_dir, ranks = run_load(args.out / "runs", case, folder, overrides)
        if strategy == "ddp":
            for rank, r in enumerate(ranks):
                for phase in ("load", "step"):
                    print(f"ddp rank {rank} {phase}: peak +{measured(r, 'fsdp', phase) / 2**20:.0f}"
                          " MiB (plain load: every rank builds the whole model)")
        else:
            print("\n".join(figures(case, shape, strategy, bool(lora), ranks)))
            over = [r for r in ranks for ph in ("load", "step")
                    if measured(r, strategy, ph) > bound(shape, strategy, bool(lora), ph)]
            if over:
                print(f"{case}: ABOVE THE BOUND")
        diff = (torch.load(run_dir / "load_logits.pt") - want).abs().max().item()
        print(f"{case}: logits vs plain single-process load: max |diff| {diff:.1e}; wall {ranks[0]['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
