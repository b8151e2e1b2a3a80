"""Loading without a full copy per rank (issue 16, items 1-2): a local HF folder of a random Qwen2-shaped model
saved in bf16, loaded by 2 gloo ranks under FSDP (built on the meta device, each rank reads its own rows from
the memory-mapped safetensors) and ZeRO-3 (partitioned as transformers loads it), full fine-tuning and LoRA.

Each rank's peak RSS while loading and through the first step stays below the bound derived in
tests/parallel/sharded_load.py (printed with -s beside the measured peak), that bound is below what a full
fp32 copy per rank would take (so the check has teeth), and the freshly loaded sharded model gives the logits
of a plain single-process load. The ~0.35B figures: tests/benchmarks/bench_load.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.parallel.sharded_load import SMALL, bound, figures, make_model_folder, model_shape, plain_logits, run_load

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
    run_dir, ranks = run_load(tmp_path, name, bf16_folder, [f"parallelism={strategy}", *(["method=lora"] if lora else [])])
    print("\n" + "\n".join(figures(name, shape, strategy, lora, ranks)))

    report = ranks[0]["report"]
    assert report["loaded_sharded"] is True, report
    # The bound has teeth: one full fp32 copy of the model per rank would not fit under it.
    assert bound(shape, strategy, lora, "load") < 4 * shape.params + 2 * shape.params
    for rank, r in enumerate(ranks):
        for phase in ("load", "step"):
            measured = (r[f"peak_{phase}_kib"] - r["rss_before_model_kib"]) * 1024
            assert measured <= bound(shape, strategy, lora, phase), f"rank {rank} {phase}: {measured / 2**20:.0f} MiB"

    got = torch.load(run_dir / "load_logits.pt")
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-5)
