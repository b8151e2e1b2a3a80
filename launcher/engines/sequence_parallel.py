"""Sequence parallelism (DeepSpeed-Ulysses): each (packed) row's tokens split over ``parallelism.sequence_parallel``
ranks, attention over the whole row.

How a step runs with N ranks in a sequence group (consecutive ranks: [0..N-1], [N..2N-1], ...; the groups sit
inside the data-parallel world, so DDP / ZeRO / FSDP still average over every rank):

1. Every rank of a group gets the same rows (the data plan runs over ``world / N`` data-parallel ranks) and
   collates them as one rank would: positions (mRoPE included) are computed on the whole row.
2. ``shard_batch`` pads the row to a multiple of N and keeps this rank's slice of the targets (shift_labels), so
   the trained-token counts the loss is normalized by add up to one rank's over the group.
3. A forward pre-hook on the text decoder keeps this rank's slice of its inputs and of the position ids (3/4-row
   mRoPE positions included). A text model's decoder gets token ids, so only this rank's tokens are embedded;
   Qwen2-VL runs its own forward on the whole row up to the decoder (the embedding, the vision tower and the
   placement of its features on the image/video tokens), and the hook keeps a copy of this rank's slice of
   the embeddings, so the whole row's are freed when that forward returns.
4. In every attention layer the registered ``ulysses_*`` attention function (transformers' AttentionInterface:
   no model code is patched) trades heads for sequence with one all-to-all (local tokens x all heads ->
   all tokens x heads/N), attends over the whole row, and trades back.
5. Packed documents never attend to each other: the segment boundaries come from the row's text position ids
   (they restart at 0 at every document), flash-attention's varlen path on a GPU, one causal sdpa call per
   (row, document) elsewhere. No [T, T] mask is ever made: at 16k tokens it would be 256 MB per row per rank.

Gradients: the all-to-all is ``torch.distributed.nn.functional.all_to_all_single`` (autograd-aware: its backward
is the reverse all-to-all); each rank's loss is the sum over its own slice, so the sum over the group is the
whole row's loss, and its gradient reaches every rank's parameters through the exchanges.

Why our own and not DeepSpeed's ``UlyssesSPAttentionHF`` (deepspeed 0.19): it replaces the global "sdpa" entry
of transformers' registry, which Qwen2-VL's vision tower also calls (it runs on the whole row, unsplit); it drops
every 4-D mask, after which sdpa attends causally across packed documents (only flash-attention reads the
boundaries from position ids); it fixes the micro-batch size at registration; and its groups come from a
module-global ``parallel_state_sp``. ``deepspeed.sequence.layer.DistributedAttention`` wants [s, b, h, d]
tensors and a local-attention module, not transformers' attention functions. accelerate 1.15's
ParallelismConfig (sp/cp) needs its own Accelerator-prepared model and does not run on CPU. gloo has
all_to_all_single (checked on torch 2.13), so the same code runs on CPU (gloo) and GPU (NCCL).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass
class SequenceParallel:
    """This rank's sequence group. ``rank``: its place in the group (which slice of each row it holds)."""

    size: int
    rank: int
    group: object
    """The torch.distributed process group of the N ranks sharing each row."""
    segment_positions: Optional[torch.Tensor] = field(default=None, repr=False)
    """[B, T] text positions of the whole rows of the current forward (restarting at 0 per document), set by the
    decoder's pre-hook and read by the attention of every layer."""
    document_spans: Optional[list] = field(default=None, repr=False)
    """Per row, the (start, end) of each document of the current forward (from ``segment_positions``, once per
    forward rather than once per layer)."""


def data_parallel_coordinates(rank: int, world_size: int, sequence_parallel: int) -> tuple[int, int]:
    """(data-parallel rank, data-parallel world): the ranks of one sequence group read the same rows."""
    return rank // sequence_parallel, world_size // sequence_parallel


def sequence_groups(world_size: int, size: int) -> list[list[int]]:
    """Consecutive ranks form a group (on a GPU node: NVLink neighbours, where the all-to-alls are cheap)."""
    return [list(range(start, start + size)) for start in range(0, world_size, size)]


def init_sequence_parallel(size: int, rank: int, world_size: int) -> Optional[SequenceParallel]:
    """The process groups (every rank creates every group, as torch.distributed requires); None for size 1."""
    if size <= 1:
        return None
    import torch.distributed as dist

    if world_size % size:
        raise ValueError(f"parallelism.sequence_parallel={size} does not divide the world size {world_size}")
    mine = None
    for ranks in sequence_groups(world_size, size):
        group = dist.new_group(ranks)
        if rank in ranks:
            mine = SequenceParallel(size=size, rank=ranks.index(rank), group=group)
    return mine


# ----------------------------------------------------------------------------------------------- the batch


def _extend_positions(positions: torch.Tensor, pad: int) -> torch.Tensor:
    """Positions continued past the row's end (last + 1, ...): the padding joins the last document, after it."""
    steps = torch.arange(1, pad + 1, dtype=positions.dtype, device=positions.device)
    return torch.cat([positions, positions[..., -1:] + steps], dim=-1)


def shard_batch(batch: dict, size: int, rank: int) -> dict:
    """A collated batch for one rank of a sequence group: the rows padded to a multiple of ``size``, the whole
    rows' input ids and positions kept (the model embeds and places vision features on the whole row; the
    decoder's hook slices), this rank's slice of ``labels`` / ``shift_labels``, and no attention mask (the
    attention reads document boundaries from the positions, see the module docstring)."""
    ids = batch["input_ids"]
    width = ids.shape[1]
    padded = -(-width // size) * size
    pad = padded - width
    local = padded // size
    out = dict(batch)
    mask = batch.get("attention_mask")
    positions = batch["position_ids"]
    if mask is not None and mask.dim() == 2:
        # Unpacked rows: one document each; the collate's padding positions (0s) would read as documents of
        # one token, so positions run on through the padding (causal: no real token sees it).
        positions = torch.arange(width, dtype=positions.dtype).expand_as(positions).clone() \
            if positions.dim() == 2 else positions
    if pad:
        out["input_ids"] = F.pad(ids, (0, pad), value=0)
        for key in ("labels", "shift_labels"):
            if key in batch:
                out[key] = F.pad(batch[key], (0, pad), value=IGNORE_INDEX)
        if batch.get("mm_token_type_ids") is not None:
            out["mm_token_type_ids"] = F.pad(batch["mm_token_type_ids"], (0, pad), value=0)
        positions = _extend_positions(positions, pad)
    out["position_ids"] = positions
    out["attention_mask"] = None
    for key in ("labels", "shift_labels"):
        if key in out:
            out[key] = out[key][:, rank * local: (rank + 1) * local].contiguous()
    return out


def segment_positions_of(position_ids: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] text positions of whole rows: 2-D ids as they are; Qwen2-VL's 4-row ids (packed) their first row;
    3-row mRoPE ids (one sample per row) a plain range."""
    if position_ids.dim() == 2:
        return position_ids
    if position_ids.shape[0] == 4:
        return position_ids[0]
    return torch.arange(width, device=position_ids.device).expand(position_ids.shape[1], width)


def segments(positions: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each document: a new one wherever the position is 0."""
    out = []
    for row in positions:
        starts = torch.nonzero(row == 0).flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0] + starts
        ends = starts[1:] + [row.shape[0]]
        out.append(list(zip(starts, ends)))
    return out


# ----------------------------------------------------------------------------------------------- attention


class _AllToAll(torch.autograd.Function):
    """Slice i of dim 0 to rank i; what rank j sent arrives as slice j. With equal slices the exchange is its own
    transpose, so the backward is the same exchange of the gradients. (torch.distributed.nn.functional's version is
    deprecated in torch 2.13 and the functional-collectives one is not autograd-aware on every backend.)"""

    @staticmethod
    def forward(ctx, x, group):
        import torch.distributed as dist

        ctx.group = group
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _AllToAll.apply(grad, ctx.group), None


def _all_to_all(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """Dim 0 of ``x`` ([N, ...]) goes to rank i of the group; returns what every rank sent here, in rank order."""
    return _AllToAll.apply(x, sp.group)


def heads_to_sequence(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """[B, H, t, d] (this rank's t tokens, every head) -> [B, H/N, N*t, d] (every token, this rank's heads)."""
    b, h, t, d = x.shape
    n = sp.size
    parts = x.reshape(b, n, h // n, t, d).permute(1, 0, 2, 3, 4)  # [N, B, H/N, t, d]: head group i for rank i
    got = _all_to_all(parts, sp)  # [N, B, H/N, t, d]: rank j's tokens, this rank's heads
    return got.permute(1, 2, 0, 3, 4).reshape(b, h // n, n * t, d)


def sequence_to_heads(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """[B, N*t, H/N, d] (every token, this rank's heads) -> [B, t, H, d] (this rank's tokens, every head)."""
    b, tokens, h, d = x.shape
    n = sp.size
    parts = x.reshape(b, n, tokens // n, h, d).permute(1, 0, 2, 3, 4)  # [N, B, t, H/N, d]: rank i's tokens
    got = _all_to_all(parts, sp)  # [N, B, t, H/N, d]: head group j from rank j
    return got.permute(1, 2, 0, 3, 4).reshape(b, tokens // n, n * h, d)


def segment_causal_sdpa(module: nn.Module, query, key, value, doc_spans, scaling, dropout: float) -> torch.Tensor:
    """Causal attention inside each document ([B, H, T, d] in, [B, T, H, d] out): one sdpa call per
    (row, document), so no [T, T] mask exists; sdpa's own causal kernels keep memory linear in T."""
    # Grouped-query attention: sdpa reads each kv head for its query heads (enable_gqa, as transformers' sdpa
    # does without a mask); repeated kv heads would be kept for backward, over the whole row, in every layer.
    gqa = query.shape[1] != key.shape[1]
    out = torch.empty_like(query)
    for b, spans in enumerate(doc_spans):
        for start, end in spans:
            out[b:b + 1, :, start:end] = F.scaled_dot_product_attention(
                query[b:b + 1, :, start:end], key[b:b + 1, :, start:end], value[b:b + 1, :, start:end],
                is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=gqa)
    return out.transpose(1, 2)


def make_ulysses_attention(sp: SequenceParallel, inner: str):
    """The attention function for AttentionInterface: all-to-all in, attention over whole rows, all-to-all out.
    ``inner``: flash_attention_2 (varlen by position ids) or sdpa (one causal call per document)."""

    def ulysses_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
        q, k, v = (heads_to_sequence(x, sp) for x in (query, key, value))
        positions = sp.segment_positions
        if inner.startswith("flash"):
            from transformers.integrations.flash_attention import flash_attention_forward

            b, h, tokens, d = q.shape
            # The rows one after another as one varlen batch: documents never cross (positions restart).
            flat = [x.transpose(0, 1).reshape(1, x.shape[1], b * tokens, d) for x in (q, k, v)]
            kwargs = {**kwargs, "position_ids": positions.reshape(1, -1)}
            out, _ = flash_attention_forward(module, *flat, None, dropout=dropout, scaling=scaling,
                                             is_causal=True, **kwargs)
            out = out.reshape(b, tokens, h, d)
        else:
            out = segment_causal_sdpa(module, q, k, v, sp.document_spans, scaling,
                                      dropout if module.training else 0.0)
        return sequence_to_heads(out, sp), None

    return ulysses_attention


def _no_mask(*args, **kwargs):
    """The mask function of the ulysses attentions: the attention reads boundaries from positions."""
    return None


# ----------------------------------------------------------------------------------------------- the model


def text_decoder(model: nn.Module) -> nn.Module:
    """The module that runs the decoder layers on embeddings: the language model of a VL model, else the
    decoder (a PEFT wrapper is looked through)."""
    from launcher.models.vision import is_vision_model, multimodal_backbone

    base = getattr(model, "get_base_model", lambda: model)()
    if is_vision_model(base):
        return multimodal_backbone(base).language_model
    return base.get_decoder()


def enable_sequence_parallel(model: nn.Module, sp: SequenceParallel) -> str:
    """Switch the model's text decoder to Ulysses attention over ``sp`` and slice its inputs per rank (a forward
    pre-hook). The vision tower keeps its own attention. Returns the registered attention name.

    The config's attention name is not written by save_pretrained (transformers keeps it out of config.json),
    so a saved model loads with the ordinary attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    decoder = text_decoder(model)
    config = decoder.config
    inner = config._attn_implementation or "sdpa"
    if inner.startswith("ulysses_"):
        return inner
    inner = "flash_attention_2" if inner.startswith("flash") else "sdpa"
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or \
        config.num_attention_heads
    if heads % sp.size or kv_heads % sp.size:
        raise ValueError(f"parallelism.sequence_parallel={sp.size} must divide the attention heads ({heads}) and"
                         f" key/value heads ({kv_heads}) of the model")
    name = f"ulysses_{inner}"
    AttentionInterface.register(name, make_ulysses_attention(sp, inner))
    AttentionMaskInterface.register(name, _no_mask)
    config._attn_implementation = name

    def slice_inputs(module, args, kwargs):
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        whole = ids if ids is not None else embeds
        width = whole.shape[1]
        local = width // sp.size
        part = slice(sp.rank * local, (sp.rank + 1) * local)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = torch.arange(width, device=whole.device).expand(whole.shape[0], width)
        sp.segment_positions = segment_positions_of(positions, width)
        sp.document_spans = None if inner.startswith("flash") else segments(sp.segment_positions)
        kwargs = dict(kwargs)
        if ids is not None:
            kwargs["input_ids"] = ids[:, part]
        if embeds is not None:
            # A copy, not a view: the first layer keeps its input for backward, and a view would keep the whole
            # row's embeddings alive until then (a VL model embeds the whole row to place its vision features).
            kwargs["inputs_embeds"] = embeds[:, part].clone()
        kwargs["position_ids"] = positions[..., part]
        kwargs["attention_mask"] = None
        return args, kwargs

    decoder.register_forward_pre_hook(slice_inputs, with_kwargs=True)
    return name
