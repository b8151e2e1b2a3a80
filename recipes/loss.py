"""Causal-LM loss computed only where labels are trained, in chunks, never materializing [B, T, V] logits.

The LM head is most of a small model's FLOPs and its fp32 logits most of its memory; computing it only at
trained positions, chunk by chunk with recomputation in backward, keeps both down while the result equals
the plain cross-entropy over all positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_ce_sum(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_ce_sum(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Sum of token cross-entropies of ``lm_head(hidden)`` against ``targets`` ([N, H], [N])."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start: start + chunk_size], targets[start: start + chunk_size]
        if torch.is_grad_enabled():
            # Recompute this chunk's logits in backward instead of keeping them alive.
            total = total + checkpoint(_chunk_ce_sum, h, lm_head, y, use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(h, lm_head, y)
    return total


def chunked_token_logprobs(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Per-token log p(target) ([N]) for DPO-style sequence scores, chunked like ``chunked_ce_sum``."""

    def one(h, y):
        logits = lm_head(h).float()
        return -F.cross_entropy(logits, y, reduction="none")

    parts = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start: start + chunk_size], targets[start: start + chunk_size]
        parts.append(checkpoint(one, h, y, use_reentrant=False) if torch.is_grad_enabled() else one(h, y))
    return torch.cat(parts) if parts else hidden.new_zeros((0,), dtype=torch.float32)


class CausalLMLoss(nn.Module):
    """Wraps a causal LM so that ``forward`` returns the summed token loss; this is what DDP/FSDP wrap.

    The caller divides by the number of trained tokens in the whole optimizer step (all micro-batches,
    all ranks), so variable-length micro-batches are weighted by their tokens (transformers#34191).
    """

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def backbone(self) -> nn.Module:
        return self.model.get_decoder()

    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def forward(self, input_ids, shift_labels, position_ids=None, attention_mask=None, **_unused) -> torch.Tensor:
        out = self.backbone()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        hidden = out.last_hidden_state
        trained = shift_labels != IGNORE_INDEX
        return chunked_ce_sum(hidden[trained], self.lm_head(), shift_labels[trained], self.chunk_size)
