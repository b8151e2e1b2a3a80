"""Loading without a full copy per rank (issue 16, items 1-2): a local HF folder of a random Qwen2-shaped model
saved in bf16, loaded by 2 gloo ranks under FSDP (built on the meta device, each rank reads its own rows from
the memory-mapped safetensors) and ZeRO-3 (partitioned as transformers loads it), full fine-tuning and LoRA.

Each rank's peak RSS while loading stays below the bound derived in tests/parallel/sharded_load.py, and
through the first step below that plus the training state and a measured working-set allowance (printed with
-s beside the measured peaks); the loading bound is below what a full fp32 copy per rank would take (so the
check has teeth), and the freshly loaded sharded model gives the logits
of a plain single-process load. The full fine-tunes' checkpoint then exports tensor by tensor, its peak RSS
printed and bounded against the model's size. A LoRA step (cutoff 256) adds at most one fp32 model to FSDP's
loading bound under both strategies (issue 32). The ~0.35B figures: tests/benchmarks/bench_load.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.parallel.sharded_load import (SMALL, bound, export_peak, figures, make_model_folder, measured, model_shape,
                                         plain_logits, run_load)

CASES = [("fsdp", False), ("fsdp", True), ("zero3", False), ("zero3", True)]


@pytest.fixture(scope="session")
def bf16_folder(tmp_path_factory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("sharded-load") / "qwen2-small-bf16", SMALL)


@pytest.fixture(scope="session")
def plain(bf16_folder) -> torch.Tensor:
    return plain_logits(bf16_folder)


@pytest.mark.parametrize("strategy,lora", CASES, ids=[f"{s}{'-lora' if lora else ''}" for s, lora in CASES])
def test_sharded_load_stays_under_the_bound_and_gives_the_plain_logits(tmp_path, bf16_folder, plain, strategy, lora):
    shape = model_shape(bf16_folder)
    name = f"{strategy}{'-lora' if lora else ''}"
    # Full fine-tunes also leave a checkpoint of their one step, to measure the streaming export of its shards.
    # LoRA at cutoff 256 (the rows are ~45 tokens): the steps of issue 32's case, on the small model; two, since
    # ZeRO-3 keeps parameters gathered once it has traced a step unless told not to (launcher.engines.deepspeed).
    run_dir, ranks = run_load(tmp_path, name, bf16_folder, [f"parallelism={strategy}",
                                                            *(["method=lora", "data.cutoff_len=256",
                                                               "train.max_steps=2"] if lora else [])],
                              checkpoint=not lora)
    print("\n" + "\n".join(figures(name, shape, strategy, lora, ranks)))

    report = ranks[0]["report"]
    assert report["loaded_sharded"] is True, report
    if strategy == "fsdp":
        # The bound has teeth: the plain load (a full fp32 copy per rank, plus the checkpoint read whole) would
        # not fit under it. ZeRO-3's measured partitioning overhead leaves no such margin at 2 ranks.
        assert bound(shape, strategy, lora, "load") < 4 * shape.params + 2 * shape.params
    for rank, r in enumerate(ranks):
        for phase in ("load", "step"):
            got = measured(r, strategy, phase)
            assert got <= bound(shape, strategy, lora, phase), f"rank {rank} {phase}: {got / 2**20:.0f} MiB"

    if lora:
        # Issue 32: a LoRA step adds at most one fp32 model's bytes to FSDP's loading bound (this rank's shards,
        # one gathered tensor, slack): room for the root and a layer gathered and the activations, not for a
        # second model. Before the ranks handed freed tensors back to the kernel
        # (launcher.training.host_heap.return_freed_memory), glibc kept the step's freed gathers: +711-750 MiB
        # under FSDP and +551-576 under ZeRO-3 against this 541 MiB; +366-379 with it (loaded machine).
        limit = bound(shape, "fsdp", lora, "load") + 4 * shape.params
        for rank, r in enumerate(ranks):
            got = measured(r, strategy, "step")
            print(f"{name} rank {rank} step: +{got / 2**20:.0f} MiB, LoRA limit {limit / 2**20:.0f} MiB")
            assert got <= limit, f"rank {rank}: {got / 2**20:.0f} MiB"

    got = torch.load(run_dir / "load_logits.pt")
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-5)

    if not lora:
        # Streaming export (item 4): the sharded checkpoint to a bf16 HF folder, tensor by tensor. Holding the
        # fp32 model plus a bf16 copy would take 6P bytes; the DCP export holds one fp32 tensor, its cast and
        # one 64 MB output file.
        peak = export_peak(run_dir / "checkpoints" / "step-0000001", tmp_path / "exported")
        limit = 4 * shape.largest_param + 2 * shape.largest_param + (64 << 20) + (96 << 20)
        if strategy == "zero3":
            # DeepSpeed's zero_to_fp32 (lazy mode too) loads every rank's flat fp32 partition before handing out
            # tensors one by one: the whole fp32 model is in the process once (measured 1.7 x at 2 ranks).
            limit += 2 * 4 * shape.params
        print(f"{name} export of the checkpoint: peak +{peak / 2**20:.0f} MiB (bound {limit / 2**20:.0f} MiB; fp32 model"
              f" {4 * shape.params / 2**20:.0f} MiB + bf16 copy {2 * shape.params / 2**20:.0f} MiB)")
        assert peak <= limit
        if strategy == "fsdp":
            assert limit < 6 * shape.params  # never the fp32 model plus a bf16 copy
