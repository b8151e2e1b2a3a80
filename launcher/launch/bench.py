"""``launcher bench [OVERRIDES] [--steps N] [--out FILE.json]``: train N steps and report speed and memory.

Prints and writes as JSON: trained tokens/s and non-pad tokens/s (steady state: the steps after the first),
seconds from the command to the start of the first step (and that step's own time), peak memory (RSS on CPU; allocated and reserved on
GPU), packing fill, achieved model FLOP/s and, on a GPU with a known bf16 peak, the MFU.

The fixed reference case anyone can rerun offline: ``launcher bench experiment=bench_reference``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def bench_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="launcher bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: train.max_steps)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: RUN_DIR/bench.json)")
    args = parser.parse_args(argv)

    import dataclasses

    from launcher.errors import ConfigError
    from launcher.launch.plan import plan_run
    from launcher.launch.run import launch_run
    from launcher.paths import BENCH_FILE

    # What is measured is training: no evaluation before, during or after it (held-out loss, exact match, DPO's
    # probe pairs: launch_run(bench=True)), and no final save. The overrides spare the setup their preparation.
    overrides = list(args.overrides) + ["train.save_model=false", "train.exact_match_samples=0",
                                        "train.eval_every=0", "method.dpo.probe_pairs=0"]
    if args.steps:
        overrides.append(f"train.max_steps={args.steps}")
    # No preflight: the start-up is timed from the command, and nothing here waits in a queue to be refused.
    plan = plan_run(overrides, preflight=False)
    cfg = plan.cfg
    if cfg.train.max_steps < 2:
        raise ConfigError("train.max_steps: a benchmark needs at least 2 steps (--steps N)")
    if cfg.cluster.nproc_per_node != 1 or cfg.cluster.kind != "local":
        raise ConfigError("cluster: launcher bench measures one local process; use cluster=local cluster.nproc_per_node=1")
    launched = launch_run(dataclasses.replace(plan, name="bench-" + plan.name), bench=True, quiet=True)
    summary, run_dir = launched.summary, launched.run_dir
    report = bench_report(summary, run_dir)
    out = args.out or run_dir / BENCH_FILE
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(format_report(report))
    print(f"written: {out}")
    return 0


def bench_report(summary: dict, run_dir: Path) -> dict:
    from launcher.config.schema import load_run_config

    cfg = load_run_config(run_dir)
    data = summary.get("data_stats", {})
    report = {
        "model": cfg.model.name,
        "method": cfg.method.name,
        # The datasets that trained (data.datasets), not the data group's name: a run that overrides
        # data.datasets (DPO on dpo_en_demo from experiment=bench_reference) keeps the group's name.
        "data": ", ".join(e.name for e in cfg.data.datasets) or cfg.data.name,
        "data_group": cfg.data.name,
        "cutoff_len": cfg.data.cutoff_len,
        "packing": cfg.data.packing,
        "micro_batch_size": cfg.train.micro_batch_size,
        "attention": summary.get("attention"),
        "compute_dtype": summary.get("compute_dtype"),
        "steps": summary.get("final_step"),
        "steady_steps": summary.get("steady_steps"),
        "trained_tokens_per_s": summary.get("steady_trained_tokens_per_s"),
        "non_pad_tokens_per_s": summary.get("steady_tokens_per_s"),
        "time_to_first_step_s": summary.get("time_to_first_step_s"),
        "first_step_seconds": summary.get("first_step_seconds"),
        "setup_seconds": summary.get("setup_seconds"),
        "startup_seconds": summary.get("startup_seconds"),
        "peak_rss_gb": summary.get("peak_rss_gb"),
        "cuda_max_allocated_gb": summary.get("cuda_max_allocated_gb"),
        "cuda_max_reserved_gb": summary.get("cuda_max_reserved_gb"),
        "packing_fill": data.get("packing_fill"),
        # VL: images/s from the data's images per non-pad token (every row is drawn once per epoch)
        "images_per_s": (summary.get("steady_tokens_per_s") or 0) * data["images"] / data["tokens"]
        if data.get("images") and data.get("tokens") else None,
        "data_cache_hit": data.get("cache_hit"),
        "model_tflops_per_s": (summary.get("model_flops_per_s") or 0) / 1e12,
        "run_dir": str(run_dir),
    }
    import torch

    if torch.cuda.is_available():
        from launcher.training.flops import gpu_peak_flops

        name = torch.cuda.get_device_name()
        peak = gpu_peak_flops(name)
        report["gpu"] = name
        if peak and summary.get("model_flops_per_s"):
            report["mfu"] = summary["model_flops_per_s"] / peak
    return report


def format_report(report: dict) -> str:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    width = max(len(k) for k in report)
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):  # the start-up breakdown: one indented line per phase
            lines.append(key)
            lines += [f"  {k:<{width - 2}}  {fmt(v)}" for k, v in value.items()]
        elif value is not None:
            lines.append(f"{key:<{width}}  {fmt(value)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
