"""Resuming a checkpoint on another topology (world size, parallelism): what can be resharded, the accumulation
that keeps the global batch, and the record ``launcher status`` shows. Torch-free: the preflight asks it too.

What can be carried to another world size or parallelism, and why:

- ddp: ``state.pt`` holds the whole trainable weights and the whole optimizer state, the same at any world size.
- fsdp, fsdp_offload: torch.distributed.checkpoint (DCP) stores every tensor with its global shape and the
  offsets of each rank's shard; a ``dcp.load`` into a model sharded over another world re-slices them (DCP's
  own resharding), so N -> M ranks, offloaded or not, is a plain load.
- ZeRO-3 (zero3, zero3_offload) -> fsdp at any world size: launcher.engines.zero_convert reads every rank's
  flat partitions back into whole fp32 weights and AdamW states, which FSDP shards over its own world.
- Any other ZeRO change (another world size under ZeRO, ZeRO-2 anywhere else, ZeRO into ddp): DeepSpeed's own
  loader needs its universal-checkpoint conversion (ds_to_universal) and a ZeRO-2 partition is laid out
  differently again; refused at the dry run, with what to do.
- Across other families (ddp <-> fsdp, fsdp -> ZeRO): the optimizer state is keyed and laid out differently
  in each; refused the same way. An online-RL objective's per-rank state (its pending completions) is refused
  at another world size.

The global batch (micro_batch_size x grad_accum x world size) is kept: the checkpoint's, with grad_accum
recomputed for the new world (``kept_grad_accum``); where it cannot divide the run is refused. With the same
global batch every optimizer step takes the same rows (launcher.training.batching), so the sample ledger
(launcher.training.ledger) and the losses continue as the uninterrupted run's.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from launcher.engines.checkpoint_layout import DEEPSPEED_TAG, FSDP_SHARDS_DIR
from launcher.errors import ConfigError

RESHARDS_FILE = "reshards.jsonl"
"""Under the run's progress folder: one record per resume onto another world size or parallelism."""

FAMILIES = {"ddp": "ddp", "fsdp": "fsdp", "fsdp_offload": "fsdp",
            "zero2": "zero2", "zero3": "zero3", "zero3_offload": "zero3"}
"""parallelism.name -> the checkpoint format it writes and reads (offload does not change the format)."""


def checkpoint_parallelism(directory: Path, meta: dict) -> str:
    """The parallelism.name that wrote a checkpoint: from its meta.json, or (older checkpoints) from its files."""
    if meta.get("parallelism"):
        return meta["parallelism"]
    directory = Path(directory)
    if (directory / FSDP_SHARDS_DIR).is_dir():
        return "fsdp"
    if (directory / DEEPSPEED_TAG).is_dir():
        return "zero"  # the stage is not recorded in older checkpoints
    return "ddp"


def reshard_refusal(directory: Path, meta: dict, parallelism: str, world: int) -> Optional[str]:
    """Why the checkpoint in ``directory`` cannot be resumed by a run with ``parallelism`` at world size ``world``,
    as one line saying what to do; None where it can (the same topology, or one it can be resharded to)."""
    directory = Path(directory)
    source = checkpoint_parallelism(directory, meta)
    old_world = meta.get("world_size", world)
    src, dst = FAMILIES.get(source, source), FAMILIES.get(parallelism, parallelism)
    if src == dst and old_world == world:
        return None
    if src == "zero" and dst.startswith("zero") and old_world == world:
        return None  # an older ZeRO checkpoint (stage not recorded) at its own world: DeepSpeed checks the stage
    where = (f"run.resume: {directory.name} was written with world size {old_world}, this run has {world}"
             f" (parallelism={source} -> {parallelism})")
    todo = (f"resume with parallelism={source} and {old_world} ranks (cluster.nodes x cluster.nproc_per_node),"
            f" or `launcher export` the run and start a new run from the export (model.name_or_path=EXPORT_DIR,"
            " run.resume=never)")
    zero3_into_fsdp = src == "zero3" and dst == "fsdp"  # launcher.engines.zero_convert reads ZeRO-3 shards whole
    if src.startswith("zero") and dst.startswith("zero") and src != dst:
        return f"{where}: ZeRO stages lay out their shards differently and cannot load each other's; {todo}"
    if src.startswith("zero") and not zero3_into_fsdp:
        return (f"{where}: a DeepSpeed ZeRO checkpoint holds each rank's flat partition of DeepSpeed's own"
                f" flattened parameter groups, which cannot be re-sliced for another world size or engine here"
                f" (that needs DeepSpeed's universal-checkpoint conversion, not run by the launcher; a ZeRO-3"
                f" checkpoint does resume under parallelism=fsdp, at any world size); {todo}")
    if src != dst and not zero3_into_fsdp:
        return (f"{where}: {src} and {dst} keep the optimizer state in different layouts (whole per parameter"
                f" vs sharded DTensors vs ZeRO partitions), so it cannot be carried across; {todo}")
    if any(directory.glob("objective_rank*.pt")):
        return (f"{where}: the objective keeps per-rank state in it (online RL's pending completions), which"
                f" belongs to the ranks that wrote it; {todo}")
    if "micro_batch_size" not in meta or "grad_accum" not in meta:
        return (f"{where}: it was written before resharding was supported and does not record its global batch"
                f" (micro_batch_size x grad_accum x world size), so the data position cannot be continued; {todo}")
    return None


def sequence_parallel_reshard_refusal(directory: Path, meta: dict, cfg) -> Optional[str]:
    """A resume onto another topology where either side splits rows over a sequence group
    (parallelism.sequence_parallel > 1): its data-parallel world and ledger are not carried across yet."""
    old, new = meta.get("sequence_parallel", 1), cfg.parallelism.sequence_parallel
    if old == 1 and new == 1:
        return None
    return (f"run.resume: {Path(directory).name} was written with world size {meta.get('world_size')},"
            f" parallelism={meta.get('parallelism')}, sequence_parallel={old}; this run has world size"
            f" {cfg.cluster.nodes * cfg.cluster.nproc_per_node}, parallelism={cfg.parallelism.name},"
            f" sequence_parallel={new}: resharding with sequence parallelism is not supported; resume with the"
            " checkpoint's topology, or `launcher export` the run and start a new run from the export")


def checkpoint_global_batch(meta: dict) -> int:
    """Rows per optimizer step: the ranks of a sequence group share theirs."""
    return meta["micro_batch_size"] * meta["grad_accum"] * meta["world_size"] // meta.get("sequence_parallel", 1)


def kept_grad_accum(meta: dict, micro_batch_size: int, world: int, name: str = "the checkpoint") -> int:
    """grad_accum at ``world`` ranks that keeps the checkpoint's global batch; refused where it cannot divide."""
    global_batch = checkpoint_global_batch(meta)
    per_pass = micro_batch_size * world
    if global_batch % per_pass:
        raise ConfigError(
            f"run.resume: {name} was trained with global batch {global_batch} (micro_batch_size"
            f" {meta['micro_batch_size']} x grad_accum {meta['grad_accum']} x world size {meta['world_size']});"
            f" at world size {world} with train.micro_batch_size={micro_batch_size} no grad_accum gives it"
            f" ({global_batch} is not a multiple of {per_pass}): {_batch_advice(global_batch, world)}")
    return global_batch // per_pass


def ignored_grad_accum(given: int, meta: dict, kept: int, global_batch: int) -> Optional[str]:
    """The warning for a ``train.grad_accum`` set for this launch that a reshard overrides (neither the
    checkpoint's value nor the kept one): without it the user's value would vanish without a word."""
    if given in (meta.get("grad_accum"), kept):
        return None
    return (f"train.grad_accum={given} is not used: a resume keeps the checkpoint's global batch {global_batch}"
            f" (train.grad_accum {kept} here); to train with another global batch, `launcher export` the run and"
            " start a new run from the export")


def _batch_advice(global_batch: int, world: int) -> str:
    if global_batch % world == 0:
        return (f"set train.micro_batch_size to a divisor of {global_batch // world} (the per-rank share of the"
                " global batch)")
    worlds = [w for w in range(1, global_batch + 1) if global_batch % w == 0]
    return (f"resume on a world size that divides {global_batch} ({', '.join(map(str, worlds))}), or export the"
            " run and start a new run from the export")


def read_meta(directory: Path) -> Optional[dict]:
    try:
        meta = json.loads((Path(directory) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def describe_reshard(meta: dict, parallelism: str, world: int, grad_accum: int) -> dict:
    """The record of one resharded resume (for the log, the run's progress folder and ``launcher status``)."""
    return {"at": time.time(), "step": meta.get("step"),
            "from_world": meta.get("world_size"), "to_world": world,
            "from_parallelism": meta.get("parallelism"), "to_parallelism": parallelism,
            "from_grad_accum": meta.get("grad_accum"), "to_grad_accum": grad_accum,
            "global_batch": checkpoint_global_batch(meta) if "micro_batch_size" in meta else None}


def reshard_line(r: dict) -> str:
    """One record as ``launcher status`` and the run log say it."""
    before, after = r.get("from_parallelism"), r.get("to_parallelism")
    strategy = f"{before} -> {after}" if before != after else f"{after}"
    return (f"resharded at step {r.get('step')}: world size {r.get('from_world')} -> {r.get('to_world')}"
            f" ({strategy}), grad_accum {r.get('from_grad_accum')} -> {r.get('to_grad_accum')}"
            f" (global batch {r.get('global_batch')} kept)")
