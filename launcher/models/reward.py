"""A reward model is transformers' ``AutoModelForSequenceClassification`` with one label, built from a causal
LM's config and weights (its ``score`` head new, the LM head dropped): the saved run dir loads back with
``AutoModelForSequenceClassification.from_pretrained`` (or that plus PEFT for LoRA) and scores as in training.

The score of a row is the head's output at the row's last token that is not ``config.pad_token_id``
(transformers' own pooling), so the config carries the tokenizer's pad id. Rows are right-padded with it.
"""
from __future__ import annotations

from torch import nn

REWARD_METHODS = ("rm",)
"""method.name values whose model is a sequence scorer."""


def is_reward_model(cfg) -> bool:
    return cfg.method.name in REWARD_METHODS


def reward_model_class():
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def class_for_method(cfg, default):
    """The transformers auto class to build for ``cfg``: the reward model's, or ``default``."""
    return reward_model_class() if is_reward_model(cfg) else default


def reward_config_kwargs(tokenizer) -> dict:
    """What the base's config needs on top to be a reward model: one output, the pad id the pooling skips."""
    return {"num_labels": 1, "pad_token_id": tokenizer.pad_token_id}


def is_sequence_scorer(model: nn.Module) -> bool:
    """A ``*ForSequenceClassification`` model (LoRA then trains and saves its score head too)."""
    return type(model).__name__.endswith("ForSequenceClassification")
