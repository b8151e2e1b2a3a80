"""GPU check of sequence parallelism with FlashAttention-2's varlen path (issue 32 item 4).

    python3 tests/gpu/gpu_seq_parallel_check.py            # torchrun itself: 2 ranks if 2 GPUs, else 1

With 2+ GPUs: 2 ranks (NCCL), one sequence group; with one GPU (NCCL refuses two ranks on one device): one rank
whose sequence group is itself, which still runs the whole Ulysses path (the all-to-all over a group of one, the
rows flattened into one varlen batch with their position ids, flash_attn_varlen_func per document).

On a packed batch of the tiny Qwen2 (bf16 weights, 2 rows of several documents, lengths not a multiple of the
group), the summed loss and every parameter's gradient (summed over the group) are compared with the same model
run whole on one rank with (a) flash_attention_2 and (b) sdpa with the block-causal mask. Prints PASS/FAIL lines;
exit 1 on a FAIL, 0 with SKIP when flash-attn is not installed.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rank_main() -> int:
    import torch
    import torch.distributed as dist

    from launcher.config.compose import compose_config
    from launcher.data.collate import collate_rows
    from launcher.engines.sequence_parallel import SequenceParallel, enable_sequence_parallel, shard_batch
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer
    from launcher.training.loss import CausalLMLoss

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(rank)
    device = torch.device("cuda", rank)
    cfg = compose_config([])
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    base = build_base_model(cfg, tokenizer, "flash_attention_2", torch.bfloat16).to(device)
    g = torch.Generator().manual_seed(1)
    rows = []
    for lengths in ([37, 90, 21], [150, 33]):
        n = sum(lengths)
        ids = torch.randint(5, 100, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids, "segment_lengths": lengths,
                     "position_ids": [p for k in lengths for p in range(k)]})

    def run(model, batch):
        loss_module = CausalLMLoss(model)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
        loss = loss_module(**batch)
        loss.backward()
        return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()}

    results = {}
    for attn in ("flash_attention_2", "sdpa"):
        whole = copy.deepcopy(base)
        whole.config._attn_implementation = attn
        results[attn] = run(whole, collate_rows(rows, 0, attn))
    group = dist.new_group(list(range(world)))
    sp = SequenceParallel(size=world, rank=rank, group=group)
    split = copy.deepcopy(base)
    name = enable_sequence_parallel(split, sp)
    loss, grads = run(split, shard_batch(collate_rows(rows, 0, "flash_attention_2"), world, rank))
    dist.all_reduce(loss)
    for grad in grads.values():
        dist.all_reduce(grad)
    failed = False
    for attn, (ref_loss, ref_grads) in results.items():
        loss_err = abs(float(loss - ref_loss)) / abs(float(ref_loss))
        grad_err = max(float((grads[n] - ref_grads[n]).abs().max() / (ref_grads[n].abs().max() + 1e-6))
                       for n in ref_grads)
        ok = loss_err < 2e-2 and grad_err < 5e-2  # bf16 weights and activations
        failed |= not ok
        if rank == 0:
            print(f"{'PASS' if ok else 'FAIL'} {name} over {world} rank(s) vs {attn} on one rank: loss"
                  f" {float(loss):.4f} vs {float(ref_loss):.4f} (rel {loss_err:.2e}), worst gradient rel {grad_err:.2e}")
    dist.destroy_process_group()
    return 1 if failed else 0


def main() -> int:
    if os.environ.get("RANK") is not None:
        return rank_main()
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 0
    if importlib.util.find_spec("flash_attn") is None:
        print("SKIP: flash-attn is not installed (pip install flash-attn --no-build-isolation)")
        return 0
    ranks = min(2, torch.cuda.device_count())
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__]
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
