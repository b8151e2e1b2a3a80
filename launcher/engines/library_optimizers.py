"""The optimizers of method.optimizer that come from their authors' libraries, built as LLaMA-Factory builds them
(its train/trainer_utils.py), and made to checkpoint and resume exactly.

- adafactor: transformers' Adafactor at the fixed learning rate (scale_parameter and relative_step off), as the
  HF Trainer builds ``optim: adafactor``.
- adamw_8bit, paged_adamw_8bit: bitsandbytes' AdamW with 8-bit states (paged: in CUDA unified memory that spills
  to the host), as the HF Trainer builds ``adamw_bnb_8bit`` / ``paged_adamw_8bit``. CUDA only.
- galore_adamw, galore_adamw_8bit, galore_adafactor (galore-torch), apollo_adamw (apollo-torch): the 2-D weights of
  the targeted linear modules (``all``: every linear layer but the LM head) form a third parameter group carrying
  the projection settings; the other parameters train with the same optimizer unprojected. The projectors (an
  object per matrix in the optimizer state) are saved with the state. ``layerwise``: an optimizer per parameter,
  stepped in the backward pass (``LayerwiseOptimizer``).
- badam (badam, layer mode): ``BlockOptimizer`` over torch's AdamW, one decoder layer at a time (embeddings, final
  norm and LM head stay frozen, as BAdam's block inference leaves them; method.weight_decay applies to every
  parameter of the active block, 1-D ones included, as BAdam regroups them). Its own
  ``state_dict`` is the base optimizer's only, so the block schedule (active block, the next one, the random
  order left) and the fp32 copies of the active block are added here (``ResumableBlockOptimizer``).
- adam_mini (adam-mini): ``Adam_mini`` with the model's hidden size and head counts.
- muon: torch's ``torch.optim.Muon`` (5 Newton-Schulz steps, Nesterov momentum 0.95, the update scaled to AdamW's
  RMS: ``adjust_lr_fn=match_rms_adamw``, as LLaMA-Factory's Moonlight Muon does) for the 2-D parameters that are
  neither embeddings nor the LM head, torch's AdamW for the rest; one optimizer to the loop (``OptimizerChain``).

Why ``OptimizerChain`` is ours: torch steps several optimizers only by hand, and our engines, schedule and
checkpoints deal with one; it shares the children's parameter-group dicts, so the schedule's lr reaches them.
Each library is imported when its optimizer is built, with a one-line error naming the pip package when it is
missing (the dry run says so first: launcher.checks.resources.check_packages).
"""
from __future__ import annotations

import importlib
from typing import Any, Iterable

import torch
from torch import nn

from launcher.config.optimizers import GALORE, PACKAGES
from launcher.errors import ConfigError


def import_library(optimizer: str, module: str):
    """The module, or a one-line error naming what to install."""
    package, pip_name = PACKAGES[optimizer]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"method.optimizer={optimizer} needs the {package} package ({exc}); pip install {pip_name}"
                          " (or pip install -e '.[optimizers]')") from None


def adam_kwargs(method) -> dict:
    return {"lr": method.lr, "betas": (method.adam_beta1, method.adam_beta2), "eps": method.adam_eps}


def adafactor_kwargs(method) -> dict:
    """The HF Trainer's Adafactor settings: the schedule's lr, no relative step or parameter scaling."""
    return {"lr": method.lr, "scale_parameter": False, "relative_step": False}


# ------------------------------------------------------------------------------------- GaLore / APOLLO


def projected_parameters(model: nn.Module, target: Any) -> list[nn.Parameter]:
    """The 2-D trainable weights of the linear modules GaLore/APOLLO project: those whose name contains one of
    ``target`` (LLaMA-Factory's substring rule), or for ``all`` every linear module but the output embedding."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found, seen = [], set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if target == "all":
            if module is output:
                continue
        elif not any(t in name for t in target):
            continue
        for p in module.parameters(recurse=False):
            if p.requires_grad and p.ndim > 1 and id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def projection_groups(model: nn.Module, groups: list[dict], projected: list[nn.Parameter], settings: dict) -> list[dict]:
    """``groups`` (decay / no decay) without the projected matrices, plus one group of those with ``settings``
    (they are decayed, as in LLaMA-Factory)."""
    if not projected:
        raise ConfigError("method.optimizer: no trainable linear weight matches the projection's target"
                          " (method.galore.target / method.apollo.target); name modules the model has (q_proj, ...)")
    ids = {id(p) for p in projected}
    out = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in groups]
    out = [g for g in out if g["params"]]
    out.append({"params": projected, "weight_decay": groups[0]["weight_decay"], **settings})
    return out


def galore_optimizer(model: nn.Module, method, groups: list[dict]) -> torch.optim.Optimizer:
    g = method.galore
    settings = {"rank": g.rank, "update_proj_gap": g.update_interval, "scale": g.scale, "proj_type": g.proj_type}
    groups = projection_groups(model, groups, projected_parameters(model, g.target), settings)
    lib = import_library(method.optimizer, "galore_torch")
    if method.optimizer == "galore_adamw":
        make = lambda gs: lib.GaLoreAdamW(gs, **adam_kwargs(method))
    elif method.optimizer == "galore_adamw_8bit":
        make = lambda gs: lib.GaLoreAdamW8bit(gs, **adam_kwargs(method))
    else:
        make = lambda gs: lib.GaLoreAdafactor(gs, **adafactor_kwargs(method))
    return LayerwiseOptimizer(groups, make) if g.layerwise else make(groups)


def apollo_optimizer(model: nn.Module, method, groups: list[dict]) -> torch.optim.Optimizer:
    a = method.apollo
    settings = {"rank": a.rank, "proj": a.proj, "proj_type": a.proj_type, "update_proj_gap": a.update_interval,
                "scale": a.scale, "scale_type": a.scale_type}
    groups = projection_groups(model, groups, projected_parameters(model, a.target), settings)
    lib = import_library(method.optimizer, "apollo_torch")
    make = lambda gs: lib.APOLLOAdamW(gs, scale_front=a.scale_front, **adam_kwargs(method))
    return LayerwiseOptimizer(groups, make) if a.layerwise else make(groups)


class OptimizerChain(torch.optim.Optimizer):
    """Several optimizers stepped, zeroed, saved and loaded as one, over disjoint parameters."""

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        # The children's group dicts themselves: the lr schedule writes group["lr"] where the children read it.
        super().__init__([g for o in self.optimizers for g in o.param_groups], {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        # torch's load_state_dict gives each child new group dicts: share those, or the schedule's lr would go to
        # the old ones and the children would keep the loaded lr.
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]


class LayerwiseOptimizer(OptimizerChain):
    """Layer-wise GaLore/APOLLO (LLaMA-Factory's galore_layerwise): one optimizer per parameter, stepped and
    zeroed by a hook as soon as backward has accumulated that parameter's gradient, so the full set of gradients
    never exists at once. The loop's ``step`` and ``zero_grad`` then have nothing left to do, and gradient
    clipping sees no gradient (grad_norm 0, as LLaMA-Factory says).

    The per-parameter optimizers' group dicts are this optimizer's groups, so the lr schedule reaches them
    directly (LLaMA-Factory builds a scheduler per parameter for the same effect). The state dict is theirs, in
    parameter order."""

    def __init__(self, groups: list[dict], make):
        super().__init__(make([{**group, "params": [p]}]) for group in groups for p in group["params"])
        for optimizer in self.optimizers:
            param = optimizer.param_groups[0]["params"][0]
            param.register_post_accumulate_grad_hook(self._stepper(optimizer))

    @staticmethod
    def _stepper(optimizer):
        def hook(param):
            if param.grad is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return hook

    def step(self, closure=None):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass


def place_projectors(optimizer: torch.optim.Optimizer) -> None:
    """After a checkpoint is loaded (its tensors mapped to the CPU): the projectors' matrices back on their
    parameter's device. ``load_state_dict`` moves state tensors, not tensors inside state objects."""
    for param, state in optimizer.state.items():
        projector = state.get("projector") if isinstance(state, dict) else None
        matrix = getattr(projector, "ortho_matrix", None)
        if isinstance(matrix, torch.Tensor) and matrix.device != param.device:
            projector.ortho_matrix = matrix.to(param.device)


# ------------------------------------------------------------------------------------- BAdam


def badam_optimizer(model: nn.Module, method, groups: list[dict]) -> torch.optim.Optimizer:
    lib = import_library("badam", "badam")

    class ResumableBlockOptimizer(lib.BlockOptimizer):
        """BAdam's BlockOptimizer whose state dict holds everything a resume needs (see the module docstring)."""

        def state_dict(self) -> dict:
            # The schedule writes the lr into these groups (the base optimizer's are refilled from them each step).
            return {"base": self.base_optimizer.state_dict(), "lrs": [g["lr"] for g in self.param_groups],
                    "active_block": self.active_block,
                    "current_block_idx": self.current_block_idx, "global_step": self.global_step,
                    "block_order": list(getattr(self, "block_order", [])),
                    "hp": [p.detach().clone() for p in self.param_idx2hp.values()]}

        def load_state_dict(self, state: dict) -> None:
            # Activate the saved block (fresh fp32 copies of its just-loaded weights), then put back the schedule,
            # the copies as they were, and the base optimizer's state for them.
            self.current_block_idx = state["active_block"]
            self.switch_trainable_params(verbose=0)
            self.active_block = state["active_block"]
            self.current_block_idx = state["current_block_idx"]
            self.global_step = state["global_step"]
            if self.switch_mode == "random":
                self.block_order = list(state["block_order"])
            for hp, saved in zip(self.param_idx2hp.values(), state["hp"], strict=True):
                hp.data.copy_(saved)
            self.base_optimizer.load_state_dict(state["base"])
            for group, lr in zip(self.param_groups, state["lrs"], strict=True):
                group["lr"] = lr

        def switch_trainable_params(self, verbose=1) -> None:
            self.active_block = self.current_block_idx
            super().switch_trainable_params(verbose)

    b = method.badam
    named = list(model.named_parameters())
    # BlockOptimizer regroups each active block with the base optimizer's defaults, whose weight_decay wins over
    # the groups' (torch's default 0.01 if not given): method.weight_decay is passed as that default.
    base = torch.optim.AdamW([g for g in groups if g["params"]], **adam_kwargs(method), weight_decay=method.weight_decay,
                             foreach=False)
    optimizer = ResumableBlockOptimizer(base_optimizer=base, named_parameters_list=named, block_prefix_list=None,
                                        switch_block_every=b.switch_interval, start_block=b.start_block,
                                        switch_mode=b.switch_mode, verbose=0)
    # BlockOptimizer points its state_dict at the base optimizer's; ours (the class's) is what resume needs.
    del optimizer.state_dict
    if b.start_block is not None and b.start_block >= optimizer.block_num:
        raise ConfigError(f"method.badam.start_block: {b.start_block}, but the model has {optimizer.block_num}"
                          f" blocks (decoder layers 0-{optimizer.block_num - 1})")
    return optimizer


# ------------------------------------------------------------------------------------- Adam-mini


def adam_mini_optimizer(model: nn.Module, method) -> torch.optim.Optimizer:
    lib = import_library("adam_mini", "adam_mini")
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config  # VL models: the language model's shape
    optimizer = lib.Adam_mini(named_parameters=model.named_parameters(), weight_decay=method.weight_decay,
                              dim=config.hidden_size, n_heads=config.num_attention_heads,
                              n_kv_heads=getattr(config, "num_key_value_heads", None), verbose=False,
                              **adam_kwargs(method))
    # Adam-mini takes the node's GPU count for the process group's size; a single process on a multi-GPU node
    # would then all-gather with no process group. Its reduction is over the ranks that train.
    optimizer.world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return optimizer


# ------------------------------------------------------------------------------------- Muon


def muon_split(model: nn.Module) -> tuple[list, list]:
    """(Muon's parameters, AdamW's): LLaMA-Factory's rule, 2-D and neither an embedding nor the LM head."""
    muon, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if p.ndim == 2 and "embed" not in name and "lm_head" not in name else rest).append(p)
    return muon, rest


def muon_optimizer(model: nn.Module, method, groups: list[dict], adamw_extra: dict) -> torch.optim.Optimizer:
    muon, _ = muon_split(model)
    ids = {id(p) for p in muon}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in groups]
    rest = [g for g in rest if g["params"]]
    parts = []
    if muon:
        parts.append(torch.optim.Muon(muon, lr=method.lr, weight_decay=method.weight_decay,
                                      adjust_lr_fn="match_rms_adamw"))
    if rest:
        parts.append(torch.optim.AdamW(rest, **adam_kwargs(method), **adamw_extra))
    return OptimizerChain(parts)


# ------------------------------------------------------------------------------------- bitsandbytes


def bnb_adamw_8bit(method, groups: list[dict]) -> torch.optim.Optimizer:
    bnb_optim = import_library(method.optimizer, "bitsandbytes.optim")
    return bnb_optim.AdamW(groups, optim_bits=8, is_paged=method.optimizer == "paged_adamw_8bit",
                           **adam_kwargs(method))


def build_library_optimizer(model: nn.Module, method, groups: list[dict], adamw_extra: dict) -> torch.optim.Optimizer:
    """method.optimizer (any but adamw and sgd) over ``groups`` (launcher.engines.optim.param_groups)."""
    opt = method.optimizer
    if opt == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, **adafactor_kwargs(method))
    if opt in ("adamw_8bit", "paged_adamw_8bit"):
        return bnb_adamw_8bit(method, groups)
    if opt in GALORE:
        return galore_optimizer(model, method, groups)
    if opt == "apollo_adamw":
        return apollo_optimizer(model, method, groups)
    if opt == "badam":
        return badam_optimizer(model, method, groups)
    if opt == "adam_mini":
        return adam_mini_optimizer(model, method)
    if opt == "muon":
        return muon_optimizer(model, method, groups, adamw_extra)
    raise ConfigError(f"method.optimizer: '{opt}' is not built here")


def after_load(optimizer: torch.optim.Optimizer) -> None:
    """What ``load_state_dict`` leaves undone for these optimizers (GaLore/APOLLO projectors' device)."""
    for child in getattr(optimizer, "optimizers", [optimizer]):
        place_projectors(child)
