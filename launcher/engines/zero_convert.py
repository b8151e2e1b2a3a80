"""A DeepSpeed ZeRO-3 checkpoint read back as whole tensors per parameter: the fp32 master weight and AdamW's
``exp_avg`` / ``exp_avg_sq`` and step, so that FSDP can resume from it at any world size (launcher.engines.fsdp).

Why our own reader and not ``ds_to_universal``: that tool writes a second checkpoint on disk (one file per state
per parameter, through worker processes) for DeepSpeed's own universal loader; FSDP only needs the tensors, once,
in memory. What it reads is the layout that tool reads (deepspeed/checkpoint/ds_to_universal.py,
``extract_zero_shards_stage3``): every rank's ``zero_pp_rank_<r>_mp_rank_00_optim_states.pt`` holds, per
sub-group, one flat fp32 partition and the optimizer state of that partition; a parameter of ``n`` elements
takes ``ceil(n / world)`` elements of each rank's partition, at the offset of the parameters before it, and the
parameter is the ranks' pieces one after the other, cut to ``n``. The names and shapes come from
``zero_pp_rank_0_mp_rank_00_model_states.pt`` (``param_shapes``, per sub-group).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

OPTIM_FILE = re.compile(r"zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")
STATES = ("exp_avg", "exp_avg_sq")


def zero3_optimizer_files(folder: Path) -> list[Path]:
    """Every rank's optimizer-state file of a ZeRO-3 checkpoint folder, in rank order."""
    found = {int(m.group(1)): p for p in Path(folder).iterdir() if (m := OPTIM_FILE.search(p.name))}
    return [found[r] for r in sorted(found)]


def read_zero3_checkpoint(folder: Path) -> tuple[dict, dict, list]:
    """(name -> {"fp32", "exp_avg", "exp_avg_sq": whole tensors}, name -> the optimizer step, the optimizer's
    param groups: their hyperparameters as scheduled at the checkpoint, with ``names`` for the parameters of
    each) of a ZeRO-3 checkpoint folder (the ``deepspeed`` tag folder). Names are the DeepSpeed module's."""
    folder = Path(folder)
    model_state = torch.load(folder / "zero_pp_rank_0_mp_rank_00_model_states.pt", map_location="cpu",
                             weights_only=False)
    shapes = model_state["param_shapes"]
    files = zero3_optimizer_files(folder)
    world = len(files)
    pieces: dict = {}
    steps: dict = {}
    groups: list = []
    for path in files:
        optim = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        if optim.get("zero_stage", 3) != 3:
            raise ValueError(f"{path.name} is not a ZeRO-3 optimizer state (zero_stage {optim.get('zero_stage')})")
        if not groups:
            groups = [{**{k: v for k, v in g.items() if k != "params"}, "names": list(group_shapes)}
                      for g, group_shapes in zip(optim["optimizer_state_dict"]["param_groups"], shapes)]
        for group, group_shapes in enumerate(shapes):
            state = optim["optimizer_state_dict"]["state"][group]
            flat = {"fp32": optim["fp32_flat_groups"][group], **{k: state[k] for k in STATES}}
            offset = 0
            for name, shape in group_shapes.items():
                part = math.ceil(math.prod(shape) / world)
                for key, tensor in flat.items():
                    pieces.setdefault(name, {}).setdefault(key, []).append(tensor.narrow(0, offset, part))
                steps[name] = state.get("step")
                offset += part
    whole = {}
    for group_shapes in shapes:
        for name, shape in group_shapes.items():
            n = math.prod(shape)
            whole[name] = {k: torch.cat(v)[:n].reshape(shape).clone() for k, v in pieces[name].items()}
    return whole, steps, groups
