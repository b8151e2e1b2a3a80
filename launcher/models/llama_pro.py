"""LLaMA-Pro block expansion (Wu et al. 2024, "LLaMA Pro: Progressive LLaMA with Block Expansion").

A model of L decoder layers gets N more: after every (L/N)-th layer, a copy of it whose output projections
(``self_attn.o_proj`` and ``mlp.down_proj``, weight and bias) are zero. Each decoder layer is residual,
``h + attn(norm(h))`` then ``h + mlp(norm(h))``, so a copy with those projections zeroed adds nothing: the expanded
model's logits equal the original's, and training only the copies (``expanded_layer_ids``, LLaMA-Factory's
``use_llama_pro`` choice) adds capacity without touching what the model knew. This is what LLaMA-Factory's
``scripts/llama_pro.py`` writes to disk; here it is done to the built model, so ``method=llama_pro`` expands and
trains in one run and saves a plain HF model whose config has L + N layers.

We write the expansion ourselves because neither transformers nor peft has one (LLaMA-Factory's is a script
over state-dict keys, not a library function).
"""
from __future__ import annotations

import copy

from launcher.errors import ConfigError

ZEROED_PROJECTIONS = ("o_proj", "down_proj")
"""The output projections of attention and MLP: zeroed in a new block so that it starts as the identity."""


def expanded_layer_ids(num_layers: int, expanded: int) -> range:
    """The ids of the ``expanded`` blocks in a model that has ``num_layers`` layers after expansion (LLaMA-Factory's
    use_llama_pro: stride-1, 2*stride-1, ... with stride = num_layers / expanded)."""
    if expanded <= 0 or num_layers % expanded:
        raise ConfigError(f"method.freeze.trainable_layers: the model's {num_layers} layers do not divide by"
                          f" {expanded} expanded blocks (LLaMA-Pro inserts one after every num_layers/N-th layer)")
    stride = num_layers // expanded
    return range(stride - 1, num_layers, stride)


def expand_blocks(model, expand: int) -> list[int]:
    """Insert ``expand`` identity-initialized decoder layers into ``model`` in place (its language model's
    ``layers``); update the config's layer count (and per-layer lists such as ``layer_types``) and every layer's
    ``layer_idx``. Returns the ids of the new layers."""
    decoder = model.get_decoder()
    layers = decoder.layers
    config = model.config.get_text_config()
    num_layers = len(layers)
    if expand <= 0 or num_layers % expand:
        raise ConfigError(f"method.llama_pro.expand: the model's {num_layers} layers do not divide by {expand}"
                          " (one block is inserted after every num_layers/expand-th layer); pick a divisor")
    split = num_layers // expand
    new_layers, new_ids, order = [], [], []
    for i, layer in enumerate(layers):
        new_layers.append(layer)
        order.append(i)
        if (i + 1) % split == 0:
            block = copy.deepcopy(layer)
            zeroed = 0
            for name, module in block.named_modules():
                if name.rsplit(".", 1)[-1] in ZEROED_PROJECTIONS:
                    for param in module.parameters(recurse=False):
                        param.data.zero_()
                        zeroed += 1
            if not zeroed:
                raise ConfigError(f"method.llama_pro.expand: this {config.model_type} model's layers have no"
                                  f" {' or '.join(ZEROED_PROJECTIONS)} to zero; LLaMA-Pro supports Llama-style layers")
            new_ids.append(len(new_layers))
            new_layers.append(block)
            order.append(i)
    decoder.layers = type(layers)(new_layers)
    for idx, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = idx
    config.num_hidden_layers = len(new_layers)
    for key in ("layer_types",):  # per-layer settings: a new block takes its source layer's
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == num_layers:
            setattr(config, key, [values[i] for i in order])
    return new_ids
