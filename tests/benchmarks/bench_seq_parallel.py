"""Peak memory per rank and tokens/s for one long row, with parallelism.sequence_parallel 1 and 2.

    python tests/benchmarks/bench_seq_parallel.py [--tokens 16384] [--steps 2] [--model tiny_qwen2]

Each setting runs in processes of its own (torchrun, gloo on CPU, NCCL on a GPU): sequence_parallel=1 is one
rank holding the whole row, sequence_parallel=2 is two ranks sharing it (one sequence group). Every rank builds
the same random-init model (conf/model/<model>.yaml, fp32, no gradient checkpointing, so activations are what
grows with the row) and runs forward + backward of the training loss (launcher.training.loss.CausalLMLoss: the
chunked LM head, the loss at every position) on one row of ``--tokens`` tokens, ``--steps`` times.

Printed per rank: the memory after the model is built, the peak during the last step, their difference (the
step's activations, gradients and buffers: what grows with the row) and the tokens/s of the group (the row's
tokens over the mean time of the steps after the first). With 2 ranks the step memory per rank should be about
half of one rank's.

On a GPU the memory is ``torch.cuda.memory_allocated`` before the step and ``max_memory_allocated`` during it.
On a CPU it is the process's resident memory before the step and its peak during it (VmRSS, and VmHWM reset
before each step through /proc/self/clear_refs), with glibc's malloc told to give every block over 128 KB its own
mapping (MALLOC_MMAP_THRESHOLD_): by default the threshold rises after the first large block is freed, later
tensors then come from the heap, and what the heap keeps after a step (about 140 MB per process at 4,096 tokens)
read as memory that did not shrink with the row. The last step is measured, not the first: the first also
allocates the gradients and the communication buffers once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now; VmHWM: its peak since the last reset), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """VmHWM back to the resident memory now (Linux 4.0+: writing 5 to clear_refs resets the peak)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


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
    # One document, no padding: plain causal attention, with no mask for transformers to expand to [T, T]
    # (256 MB at 16k tokens, which would flatter the split).
    batch["attention_mask"] = None
    if sp is not None:
        batch = shard_batch(batch, sp.size, sp.rank)
    batch = {k: v.to(info.device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
    cuda = info.device.type == "cuda"
    built = torch.cuda.memory_allocated() / 2**20 if cuda else status_mb("VmRSS")
    times = []
    for _ in range(args.steps):
        if dist.is_initialized():
            dist.barrier()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
        else:
            reset_peak_rss()
            before = status_mb("VmRSS")
        start = time.perf_counter()
        loss = loss_module(**batch)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else status_mb("VmHWM")
        model.zero_grad(set_to_none=True)
    mean = sum(times[1:] or times) / len(times[1:] or times)
    result = {"sp": args.sp, "rank": info.rank, "built_mb": round(built, 1), "before_mb": round(before, 1),
              "peak_mb": round(peak, 1),
              "step_mb": round(peak - before, 1), "step_s": round(mean, 3),
              "tokens_per_s": round(args.tokens / mean, 1), "device": str(info.device)}
    Path(args.out, f"sp{args.sp}_rank{info.rank}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=2)
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
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))  # see the module docstring
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
          f" OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, {args.steps} step(s), the last one measured")
    print(f"{'sequence_parallel':>17} {'rank':>4} {'model MB':>9} {'before step':>11} {'step peak':>9}"
          f" {'step MB':>8} {'step s':>7} {'tokens/s':>9}")
    for r in rows:
        print(f"{r['sp']:>17} {r['rank']:>4} {r['built_mb']:>9} {r['before_mb']:>11} {r['peak_mb']:>9}"
              f" {r['step_mb']:>8} {r['step_s']:>7} {r['tokens_per_s']:>9}")
    one = [r["step_mb"] for r in rows if r["sp"] == 1][0]
    two = max(r["step_mb"] for r in rows if r["sp"] == 2)
    print(f"step memory per rank, sequence_parallel 2 / 1: {two / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
