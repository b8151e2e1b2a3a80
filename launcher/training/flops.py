"""Model FLOPs per trained token, from the architecture: what MFU is measured against.

Counts the matmuls of a decoder-only transformer (attention projections with GQA, gated MLP, causal
attention scores over each sample's own context) and the LM head only where the loss is computed (our loss
skips the LM head at untrained positions). Training = forward + backward = 3 x forward.
VL models: the language model is counted (their ``text_config``); the vision tower's FLOPs are not.
"""
from __future__ import annotations

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a part of torch.cuda.get_device_name(); the more
# specific names first (an "H100 PCIe" is also an "H100").
GPU_BF16_PEAK = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
}


def layer_matmul_params(config) -> int:
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o and k, v
    mlp = 3 * h * config.intermediate_size  # gate, up, down
    return attn + mlp


def forward_flops(config, tokens: int, lm_head_positions: int, attended_pairs: int) -> float:
    """Forward FLOPs for ``tokens`` positions, ``lm_head_positions`` LM-head rows and the causal pairs attended."""
    config = getattr(config, "text_config", None) or config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers
    dense = 2 * layer_matmul_params(config) * layers * tokens
    attention = 2 * 2 * heads * head_dim * layers * attended_pairs  # QK^T and AV
    head = 2 * config.hidden_size * config.vocab_size * lm_head_positions
    return float(dense + attention + head)


def causal_pairs(segment_lengths: list[int]) -> int:
    """(query, key) pairs a causal mask allows within each sample: n(n+1)/2 per sample."""
    return sum(n * (n + 1) // 2 for n in segment_lengths)


def training_flops(config, tokens: int, lm_head_positions: int, attended_pairs: int) -> float:
    return 3.0 * forward_flops(config, tokens, lm_head_positions, attended_pairs)


def gpu_peak_flops(device_name: str) -> float | None:
    for key, value in GPU_BF16_PEAK.items():
        if key in device_name:
            return value
    return None
