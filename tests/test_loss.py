"""The optimized loss (trained positions only, chunked, fused head gradients) equals the plain HF loss, and
its gradients equal the plain gradients, on the same batch."""
from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from launcher.training.loss import IGNORE_INDEX, CausalLMLoss, fused_linear_ce_sum


def tiny_model(tied: bool) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=997, tie_word_embeddings=tied)
    return Qwen2ForCausalLM(config).float()


def batch(vocab: int):
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, vocab, (3, 40), generator=g)
    labels = input_ids.clone()
    labels[:, :15] = IGNORE_INDEX  # a prompt
    labels[1, 30:] = IGNORE_INDEX  # padding at the end of row 1
    attention = torch.ones_like(input_ids)
    attention[1, 30:] = 0
    shift = torch.full_like(labels, IGNORE_INDEX)
    shift[:, :-1] = labels[:, 1:]
    positions = torch.arange(40).expand(3, 40).clone()
    return input_ids, labels, shift, attention, positions


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("fused,chunk", [(True, 7), (True, 4096), (False, 7)])
def test_loss_and_gradients_equal_plain_hf(tied, fused, chunk):
    model = tiny_model(tied)
    input_ids, labels, shift, attention, positions = batch(model.config.vocab_size)
    plain = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, labels=labels).loss
    plain.backward()
    expected = grads(model)
    model.zero_grad(set_to_none=True)

    n_trained = int((shift != IGNORE_INDEX).sum())
    ours = CausalLMLoss(model, chunk_size=chunk, fused=fused)(
        input_ids=input_ids, shift_labels=shift, position_ids=positions, attention_mask=attention) / n_trained
    ours.backward()
    got = grads(model)
    torch.testing.assert_close(ours, plain, rtol=1e-6, atol=1e-6)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_fused_head_without_grad_and_with_no_trained_token():
    weight = torch.randn(50, 8)
    hidden = torch.randn(5, 8)
    targets = torch.randint(0, 50, (5,))
    with torch.no_grad():
        value = fused_linear_ce_sum(hidden, weight, targets, chunk_size=2)
    expected = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    torch.testing.assert_close(value, expected)
    empty = fused_linear_ce_sum(hidden[:0].requires_grad_(), weight.requires_grad_(), targets[:0], 2)
    empty.backward()
    assert float(empty.detach()) == 0.0 and float(weight.grad.abs().sum()) == 0.0


class _MatmulDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the input dtypes of every matmul that runs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_, torch.ops.aten.bmm):
            self.seen.append(tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


def test_fused_head_under_bf16_autocast_matches_plain_head_and_stays_bf16():
    """What a GPU run does (bf16 autocast over fp32 master weights), checked on CPU's autocast."""
    g = torch.Generator().manual_seed(3)
    weight = (torch.randn(997, 64, generator=g) * 0.1).requires_grad_()
    hidden = torch.randn(50, 64, generator=g).requires_grad_()
    targets = torch.randint(0, 997, (50,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = torch.nn.functional.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum")
    plain.backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    with _MatmulDtypes() as matmuls, torch.autocast("cpu", dtype=torch.bfloat16):
        ours = fused_linear_ce_sum(hidden, weight, targets, chunk_size=16)
    ours.backward()
    # Every forward-time matmul (logits, and both gradients) ran in bf16; none silently in fp32.
    assert len(matmuls.seen) == 4 * 3 and all(set(d) == {torch.bfloat16} for d in matmuls.seen), matmuls.seen
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    torch.testing.assert_close(ours, plain, rtol=1e-3, atol=0)
    torch.testing.assert_close(hidden.grad, expected[0], rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(weight.grad, expected[1], rtol=2e-2, atol=2e-3)


def test_cpu_head_buffers_change_no_bit():
    """On a CPU the fused head writes each chunk's logits into buffers made once per call (no fresh
    [chunk, vocab] tensors to fault in): loss and gradients equal, bit for bit, those of fresh tensors and
    torch.logsumexp (the head as it was), also for a last chunk shorter than the others."""
    from launcher.training.loss import _logits_lse_into

    torch.manual_seed(0)
    hidden, weight = torch.randn(23, 16), torch.randn(1000, 16) * 0.3
    targets = torch.randint(0, 1000, (23,))
    logits, lse = _logits_lse_into(hidden, weight, torch.empty(23, 1000), torch.empty(23, 1000))
    assert torch.equal(logits, hidden @ weight.t())
    assert torch.equal(lse, torch.logsumexp(hidden @ weight.t(), dim=-1))

    total, grad_h, grad_w = torch.zeros(()), torch.empty_like(hidden), torch.zeros(weight.shape)
    for start in range(0, 23, 8):  # the head as it was: fresh tensors per chunk
        h, y = hidden[start: start + 8], targets[start: start + 8]
        chunk_logits = h @ weight.t()
        chunk_lse = torch.logsumexp(chunk_logits, dim=-1)
        total += (chunk_lse - chunk_logits.gather(1, y[:, None]).squeeze(1)).sum()
        grad = chunk_logits.sub_(chunk_lse[:, None]).exp_()
        grad[torch.arange(y.shape[0]), y] -= 1.0
        grad_h[start: start + 8] = grad @ weight
        grad_w.addmm_(grad.t(), h)
    h_in, w_in = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = fused_linear_ce_sum(h_in, w_in, targets, chunk_size=8)
    loss.backward()
    assert torch.equal(loss.detach(), total)
    assert torch.equal(h_in.grad, grad_h) and torch.equal(w_in.grad, grad_w)
