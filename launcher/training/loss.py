"""Causal-LM loss computed only where labels are trained, in chunks, never materializing [B, T, V] logits.

The LM head is most of a small model's FLOPs and its fp32 logits most of its memory. Two ways, same result
as the plain cross-entropy over all positions:

- ``fused_linear_ce_sum`` (the default for a plain ``nn.Linear`` head): each chunk's logits are made once,
  and the gradients of the head's input and weight are computed right there in the forward (the loss is a
  sum, so its gradient is known up to the scalar that backward brings). Three matmuls per chunk, as an
  unchunked head costs, and one chunk of logits alive at a time.
- ``chunked_ce_sum``: calls the head module per chunk under activation checkpointing (four matmuls: the
  forward is recomputed). Used where the head is not a plain Linear (LoRA or modules_to_save on it), or
  where its weight may only be touched through its own forward (DeepSpeed ZeRO-3 gathers it in a hook).
"""
from __future__ import annotations

from typing import Optional

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
    # With nothing trained here (a sequence-parallel slice of prompt tokens) the head still runs once, on no rows,
    # the same way: under ZeRO-3 its weight is gathered collectively in that call (and again in the recompute).
    for start in range(0, max(hidden.shape[0], 1), chunk_size):
        h, y = hidden[start: start + chunk_size], targets[start: start + chunk_size]
        if torch.is_grad_enabled():
            # Recompute this chunk's logits in backward instead of keeping them alive.
            total = total + checkpoint(_chunk_ce_sum, h, lm_head, y, use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(h, lm_head, y)
    return total


def _autocast_dtype(device: torch.device):
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def _logits_lse_into(h: torch.Tensor, w: torch.Tensor, logits: torch.Tensor, scratch: torch.Tensor):
    """(h @ w.T written into ``logits``, its row-wise log-sum-exp), with ``scratch`` for the exponentials.

    The steps of torch.logsumexp on a CPU (max, max set to 0 where infinite, sum of exp(x - max), log, + max),
    into given buffers instead of fresh ones: the same result, bit for bit (tests/test_loss.py checks it)."""
    torch.mm(h, w.t(), out=logits)
    maxes = logits.amax(dim=-1, keepdim=True)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    sums = torch.sub(logits, maxes, out=scratch).exp_().sum(dim=-1)
    return logits, sums.log_().add_(maxes.squeeze(-1))


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_n CE(hidden[n] @ weight.T, targets[n]) with its gradients computed chunk by chunk in forward.

    Under autocast (bf16 on a GPU) every matmul runs in the autocast dtype, as the plain head's would, the
    weight's gradient included (an fp32 matmul there would run at a fraction of the tensor cores' rate); the
    weight is cast once per call rather than per chunk; log-sum-exp and the loss stay fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        compute_dtype = _autocast_dtype(hidden.device) or weight.dtype
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        # fp32 on a CPU: every chunk's logits (and log-sum-exp's exp) go into two buffers made once per call.
        # A fresh [chunk, vocab] tensor per chunk is a new mmap the kernel faults in and zeroes page by page
        # (3 x 155 MB per chunk for a 150k vocabulary: ~1/6 of the head's CPU time); GPUs' caching allocator
        # has no such cost. Same operations, bitwise the same loss and gradients.
        buffers = None
        if hidden.device.type == "cpu" and compute_dtype == torch.float32 and hidden.shape[0]:
            buffers = torch.empty((2, min(chunk_size, hidden.shape[0]), w.shape[0]), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_size):
            h, y = hidden[start: start + chunk_size].to(compute_dtype), targets[start: start + chunk_size]
            if buffers is not None:
                logits, lse = _logits_lse_into(h, w, buffers[0, : h.shape[0]], buffers[1, : h.shape[0]])
            else:
                logits = (h @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if need_h or need_w:
                # d CE / d logits = softmax - onehot, made in place in the logits buffer.
                grad_logits = logits.sub_(lse[:, None]).exp_()
                grad_logits[torch.arange(y.shape[0], device=y.device), y] -= 1.0
                grad_logits = grad_logits.to(compute_dtype)
                if need_h:
                    grad_h[start: start + chunk_size] = grad_logits @ w
                if need_w:
                    if compute_dtype == torch.float32:
                        grad_w.addmm_(grad_logits.t(), h)
                    else:  # a low-precision product per chunk, summed in fp32
                        grad_w += grad_logits.t() @ h
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None)
        ctx.weight_dtype = weight.dtype
        ctx.backward_done = False
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        # Scaled in place: the gradients were made for this backward alone, and a fresh [vocab, hidden] fp32
        # product is one more tensor to allocate (and on a CPU, fault in) per step. Same multiplication, same bits.
        if ctx.backward_done:
            raise RuntimeError("the fused LM head's backward runs once per forward (no retain_graph)")
        ctx.backward_done = True
        if grad_h is not None:
            grad_h = grad_h.mul_(grad_out.to(grad_h.dtype))
        if grad_w is not None:
            grad_w = grad_w.mul_(grad_out).to(ctx.weight_dtype)
        return grad_h, grad_w, None, None


def fused_linear_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        chunk_size: int) -> torch.Tensor:
    """Sum of token cross-entropies of ``hidden @ weight.T`` against ``targets`` ([N, H], [V, H], [N])."""
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0 + weight.sum() * 0.0  # keeps the graph (and DDP's hooks) connected
    if not torch.is_grad_enabled():
        with torch.no_grad():
            return _FusedLinearCrossEntropy.forward(_NoGradCtx(), hidden, weight, targets, chunk_size)
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, chunk_size)


class _NoGradCtx:
    """Stands in for autograd's ctx when no gradient is wanted (evaluation)."""

    needs_input_grad = (False, False, False, False)

    def save_for_backward(self, *tensors):
        pass


def plain_linear_head(module: nn.Module) -> bool:
    """A head whose weight we may use directly: a bias-free nn.Linear (not a PEFT or DeepSpeed wrapper)."""
    return type(module) is nn.Linear and module.bias is None


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

    def __init__(self, model: nn.Module, chunk_size: int = 256, fused: bool = True, token_loss=None,
                 reference: Optional[nn.Module] = None):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.fused = fused
        # A reweighted SFT loss (launcher.training.token_losses; a TokenLossConfig), None or ce: cross-entropy.
        self.token_loss = token_loss if token_loss is not None and token_loss.name != "ce" else None
        # ASFT's frozen reference, kept out of the module tree (not wrapped, trained or checkpointed); None with
        # an adapter: the policy with its adapters switched off is the reference.
        self.__dict__["reference"] = reference

    def backbone(self) -> nn.Module:
        return self.model.get_decoder()

    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def forward(self, input_ids, shift_labels, position_ids=None, attention_mask=None, **vision) -> torch.Tensor:
        hidden = backbone_hidden(self.model, input_ids, attention_mask, position_ids, vision)
        trained = shift_labels != IGNORE_INDEX
        head = self.lm_head()
        if self.token_loss is not None:
            return self.reweighted_loss_sum(hidden[trained], head, shift_labels[trained], trained, input_ids,
                                            attention_mask, position_ids, vision)
        if self.fused and plain_linear_head(head):
            return fused_linear_ce_sum(hidden[trained], head.weight, shift_labels[trained], self.chunk_size)
        return chunked_ce_sum(hidden[trained], head, shift_labels[trained], self.chunk_size)


    def reweighted_loss_sum(self, hidden, head, targets, trained, input_ids, attention_mask, position_ids, vision):
        from launcher.training.token_losses import chunked_token_loss_sum

        t = self.token_loss
        ref_hidden = ref_head = None
        if t.name == "asft":
            with torch.no_grad():
                if self.reference is not None:
                    ref_hidden = backbone_hidden(self.reference, input_ids, attention_mask, position_ids, vision)
                    ref_head = self.reference.get_output_embeddings()
                else:  # an adapter on a frozen base: the base is the starting model
                    with self.model.disable_adapter():
                        ref_hidden = backbone_hidden(self.model, input_ids, attention_mask, position_ids, vision)
                    ref_head = head
                ref_hidden = ref_hidden[trained]
        return chunked_token_loss_sum(hidden, head, targets, self.chunk_size, t.name, t.asft_alpha, t.eaft_alpha,
                                      ref_hidden, ref_head)


AUDIO_INPUTS = ("input_features", "feature_attention_mask",
                # the Qwen2.5-Omni thinker's images and videos (it computes its own position ids from them)
                "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "video_second_per_grid",
                "use_audio_in_video")
VISION_INPUTS = ("pixel_values", "image_grid_thw", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
                 "second_per_grid_ts")


def backbone_hidden(model: nn.Module, input_ids, attention_mask, position_ids, batch: dict):
    """Last hidden states of the model's backbone (no LM head).

    A text model runs its decoder. A VL model (Qwen2-VL family) runs its multimodal ``model`` with
    pixel_values, image_grid_thw, mm_token_type_ids and the explicit 3-D position ids from the collate (a
    text-only batch carries a masked dummy image there: launcher.data.collate.with_dummy_image).
    """
    from launcher.models.audio import is_audio_model
    from launcher.models.vision import is_vision_model, multimodal_backbone

    base = getattr(model, "get_base_model", lambda: model)()
    if is_audio_model(base):  # Qwen2-Audio: its model puts the audio tower's features on the <|AUDIO|> tokens
        kwargs = {k: batch[k] for k in AUDIO_INPUTS if batch.get(k) is not None}
        out = multimodal_backbone(model)(input_ids=input_ids, attention_mask=attention_mask,
                                         position_ids=position_ids, use_cache=False, **kwargs)
        return out.last_hidden_state
    if not is_vision_model(base):
        out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False)
        return out.last_hidden_state
    kwargs = {k: batch[k] for k in VISION_INPUTS if batch.get(k) is not None}
    out = multimodal_backbone(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=False, **kwargs)
    return out.last_hidden_state


