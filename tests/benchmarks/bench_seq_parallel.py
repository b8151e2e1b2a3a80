"""Peak memory per rank and tokens/s for one long row, with parallelism.sequence_parallel 1 and 2.

    python tests/benchmarks/bench_seq_parallel.py [--tokens 16384] [--steps 3] [--model tiny_qwen2]

Each setting runs in processes of its own (torchrun, gloo on CPU, NCCL on a GPU): sequence_parallel=1 is one
rank holding the whole row, sequence_parallel=2 is two ranks sharing it (one sequence group). Every rank builds
the same random-init model (conf/model/<model>.yaml, fp32, no gradient checkpointing, so activations are what
grows with the row) and runs forward + backward of the training loss (launcher.training.loss.CausalLMLoss: the
chunked LM head, the loss at every position) on one row of ``--tokens`` tokens, ``--steps`` times.

Printed per rank: the resident memory after the model is built, the peak during the steps (on CPU: the
process's peak RSS, ``ru_maxrss``; on a GPU: ``torch.cuda.max_memory_allocated``), their difference (the
step's activations, gradients and buffers) and the tokens/s of the group (the row's tokens over the mean step
time). With 2 ranks the step memory per rank should be about half of one rank's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    import yaml

    from launcher.config.schema import parse_config
    from launcher.data.collate import collate_rows
    from launcher.engines.distributed import init_distributed
    from launcher.engines.sequence_parallel import enable_sequence_parallel, init_sequence_parallel, shard_batch
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer
    from launcher.training.loss import CausalLMLoss

    info = init_distributed("auto")
    model_cfg = yaml.safe_load((REPO / "conf" / "model" / f"{args.model}.yaml").read_text())
    model_cfg.setdefault("config", {})["max_position_embeddings"] = max(args.tokens, 512)
    cfg = parse_config({"model": model_cfg, "data": {"datasets": ["x"]}})
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    attn = "flash_attention_2" if info.device.type == "cuda" and args.flash else "sdpa"
    model = build_base_model(cfg, tokenizer, attn, torch.float32).to(info.device)
    sp = init_sequence_parallel(args.sp, info.rank, info.world_size)
    if sp is not None:
        enable_sequence_parallel(model, sp)
    loss_module = CausalLMLoss(model, cfg.train.loss_chunk_size)
    ids = torch.randint(10, min(len(tokenizer), 1000), (args.tokens,), generator=torch.Generator().manual_seed(1))
    row = {"input_ids": ids.tolist(), "labels": ids.tolist()}
    batch = collate_rows([row], tokenizer.pad_token_id or 0, attn)
    if sp is not None:
        batch = shard_batch(batch, sp.size, sp.rank)
    batch = {k: v.to(info.device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
    if info.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = rss_mb()
    times = []
    for _ in range(args.steps):
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        loss = loss_module(**batch)
        loss.backward()
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    if info.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mean = sum(times[1:] or times) / len(times[1:] or times)
    result = {"sp": args.sp, "rank": info.rank, "before_mb": round(before, 1), "peak_mb": round(peak, 1),
              "step_mb": round(peak - before, 1), "step_s": round(mean, 3),
              "tokens_per_s": round(args.tokens / mean, 1), "device": str(info.device)}
    Path(args.out, f"sp{args.sp}_rank{info.rank}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model", default="tiny_qwen2")
    parser.add_argument("--flash", action="store_true", help="on a GPU: flash_attention_2 inside (else sdpa)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sp", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for sp in (1, 2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={sp}",
                   __file__, "--worker", "--sp", str(sp), "--out", out, "--tokens", str(args.tokens),
                   "--steps", str(args.steps), "--model", args.model] + (["--flash"] if args.flash else [])
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-4000:], file=sys.stderr)
                return proc.returncode
            rows += [json.loads(p.read_text()) for p in sorted(Path(out).glob(f"sp{sp}_rank*.json"))]
    print(f"one row of {args.tokens} tokens, model {args.model}, {rows[0]['device']},"
          f" OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    print(f"{'sequence_parallel':>17} {'rank':>4} {'after build MB':>14} {'peak MB':>9} {'step MB':>8}"
          f" {'step s':>7} {'tokens/s':>9}")
    for r in rows:
        print(f"{r['sp']:>17} {r['rank']:>4} {r['before_mb']:>14} {r['peak_mb']:>9} {r['step_mb']:>8}"
              f" {r['step_s']:>7} {r['tokens_per_s']:>9}")
    one = [r["step_mb"] for r in rows if r["sp"] == 1][0]
    two = max(r["step_mb"] for r in rows if r["sp"] == 2)
    print(f"step memory per rank, sequence_parallel 2 / 1: {two / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
