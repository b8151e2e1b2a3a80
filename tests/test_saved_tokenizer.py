"""A saved tokenizer reloads as itself: the tiny models' character tokenizer beside a qwen2 config.

transformers 5's AutoTokenizer builds a Qwen2Tokenizer from the vocabulary for any qwen2 folder, which drops
spaces and newlines from the character tokenizer's output; load_saved_tokenizer must not.
"""
from __future__ import annotations

from launcher.models.tokenizers import build_char_tokenizer, load_saved_tokenizer


def test_char_tokenizer_round_trips_beside_a_qwen2_config(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=99, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                intermediate_size=8).save_pretrained(tmp_path)
    original = build_char_tokenizer()
    original.save_pretrained(tmp_path)
    text = "Is 7 even or odd?\n<|im_start|>user\nhi<|im_end|>"
    reloaded = load_saved_tokenizer(tmp_path)
    assert reloaded(text)["input_ids"] == original(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == text
    assert reloaded.chat_template == original.chat_template and reloaded.eos_token == "<|im_end|>"
