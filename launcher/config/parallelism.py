"""The parallelism presets: one table from ``parallelism=NAME`` to the engine and what it shards, and every
answer about a parallelism derived from it.

``conf/parallelism/NAME.yaml`` states the same keys for Hydra (tests/parallel/test_parallel_config.py checks
each file against this table); the schema's name check (``PARALLELISMS``), the memory estimate's suggestions,
the model build's path and the loss's head all read the table or the ``Parallelism`` rules below.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Parallelism:
    strategy: str
    """ddp, deepspeed or fsdp: the engine that runs it."""
    zero_stage: int = 0
    """DeepSpeed's ZeRO stage (1, 2, 3); 0 for ddp and fsdp."""
    offload: bool = False
    """CPU offload: ZeRO-3 parameters + optimizer state, or FSDP2's CPUOffloadPolicy."""

    @property
    def sharding_stage(self) -> int:
        """What is split over the ranks, in ZeRO's stages: 0 nothing (DDP), 1 the optimizer state, 2 the
        gradients too, 3 the parameters too (FSDP shards all three)."""
        if self.strategy == "fsdp":
            return 3
        return self.zero_stage if self.strategy == "deepspeed" else 0

    @property
    def shards_parameters(self) -> bool:
        """ZeRO-3 and FSDP keep only a shard of each parameter per rank."""
        return self.sharding_stage == 3

    @property
    def zero3(self) -> bool:
        """DeepSpeed ZeRO-3: parameters are partitioned as the model is built and gathered only inside their
        module's forward."""
        return self.strategy == "deepspeed" and self.zero_stage == 3

    def keys(self) -> dict:
        """The config keys that say it: {strategy, zero_stage, offload}."""
        return asdict(self)


PRESETS: dict[str, Parallelism] = {
    "ddp": Parallelism("ddp"),
    "zero2": Parallelism("deepspeed", zero_stage=2),
    "zero3": Parallelism("deepspeed", zero_stage=3),
    "zero3_offload": Parallelism("deepspeed", zero_stage=3, offload=True),
    "fsdp": Parallelism("fsdp"),
    "fsdp_offload": Parallelism("fsdp", offload=True),
}
"""parallelism.name -> what it does; the name and the three keys of a config must agree with its row."""

STRATEGIES = tuple(dict.fromkeys(row.strategy for row in PRESETS.values()))
"""The engines, in the table's order: ddp, deepspeed, fsdp."""


def parallelism_of(p) -> Parallelism:
    """The row a config's ``parallelism`` keys describe (a ``ParallelismConfig``: strategy, zero_stage, offload)."""
    return Parallelism(p.strategy, p.zero_stage, p.offload)


def sharding_stage(p) -> int:
    return parallelism_of(p).sharding_stage


def shards_parameters(p) -> bool:
    return parallelism_of(p).shards_parameters
