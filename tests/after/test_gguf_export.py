"""launcher export --format gguf: transformers reads the file back and gives the HF model's logits.

Small models with small byte-level BPE tokenizers (Qwen2's and Llama 3's pre-tokenizers, trained here in a
second) cover f32/f16/q8_0 and both architectures quickly; one test uses the real Qwen tokenizer
(model=tiny_qwen2_qwentok); the default tiny model's character tokenizer (byte-level, no merges) round-trips.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

from launcher.cli import main as cli_main  # noqa: E402
from launcher.config.compose import compose_config  # noqa: E402
from launcher.export.gguf import LLAMA3_SPLIT  # noqa: E402
from launcher.models.build import build_base_model  # noqa: E402

TEXT = "Hello, world! The cat's 12 apples; <|im_start|>user\nhi there<|im_end|>\n"
SMALL = ["model.config.hidden_size=64", "model.config.intermediate_size=128", "model.config.num_hidden_layers=2",
         "model.config.num_attention_heads=4", "model.config.num_key_value_heads=2",
         "model.config.tie_word_embeddings=false"]


def small_bpe(split: str):
    """A byte-level BPE with ChatML specials, trained on a few sentences, pre-tokenized by ``split``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from launcher.models.tokenizers import build_char_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the cat sat on the mat", "hello world, hello there", "apples and 12 pears"] * 20,
                            trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = build_char_tokenizer().chat_template  # the ChatML template of our tiny models
    return fast


def save_model(tmp: Path, arch: str, tokenizer, overrides=()) -> Path:
    cfg = compose_config([f"model.arch={arch}", *overrides])
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    # random init draws tiny biases/norm weights; perturb norms so a wrong mapping would show
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    out = tmp / f"{arch}-model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def export_and_compare(folder: Path, dtype: str, capsys, build_tokenizer: bool = True) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = folder.parent / f"{folder.name}-{dtype}.gguf"
    assert cli_main(["export", str(folder), "--format", "gguf", "--dtype", dtype, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"exported: {out}" in printed
    ref_tok = AutoTokenizer.from_pretrained(folder)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32)
    ids = ref_tok(TEXT, add_special_tokens=False)["input_ids"]
    if build_tokenizer:
        tok = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
        assert tok(TEXT, add_special_tokens=False)["input_ids"] == ids  # the tokenizer travelled in the metadata
        assert tok.chat_template == ref_tok.chat_template and tok.eos_token == "<|im_end|>"
    else:
        # transformers' tokenizer build from 151k merges takes a minute; read what it would read instead
        from transformers.integrations.gguf.reader import read_gguf_metadata

        meta, _ = read_gguf_metadata(str(out), ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))
        vocab = ref_tok.get_vocab()
        tokens = meta["tokenizer.ggml.tokens"]
        assert all(tokens[i] == t for t, i in vocab.items())
        assert meta["tokenizer.chat_template"] == ref_tok.chat_template
        assert meta["tokenizer.ggml.pre"] == "qwen2" and len(meta["tokenizer.ggml.merges"]) > 150_000
    a, b = logits(ref, ids), logits(model, ids)
    return (a - b).abs().max().item(), a.abs().max().item()


@pytest.mark.parametrize("arch, split_name", [("qwen2", "qwen2"), ("llama", "llama3")])
@pytest.mark.parametrize("dtype, tolerance", [("f32", 1e-5), ("f16", 2e-3), ("q8_0", 3e-2)])
def test_round_trip_through_transformers(tmp_path, capsys, arch, split_name, dtype, tolerance):
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = small_bpe(PRETOKENIZE_REGEX if split_name == "qwen2" else LLAMA3_SPLIT)
    folder = save_model(tmp_path, arch, tokenizer, SMALL)
    diff, scale = export_and_compare(folder, dtype, capsys)
    assert diff <= tolerance * max(scale, 1.0), (diff, scale)


def test_real_qwen_tokenizer_run(tmp_path, capsys):
    """model=tiny_qwen2_qwentok: the 151k-token Qwen vocabulary, tied embeddings, f16."""
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config(["model=tiny_qwen2_qwentok"])
    tokenizer = load_tokenizer(cfg.model)
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    folder = tmp_path / "qwentok"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    diff, scale = export_and_compare(folder, "f16", capsys, build_tokenizer=False)
    assert diff <= 2e-3 * max(scale, 1.0), (diff, scale)


def test_default_character_tokenizer_round_trips(full_run, capsys):
    """The default tiny model's character vocabulary is a byte-level BPE without merges: it travels too."""
    diff, scale = export_and_compare(Path(full_run) / "model", "f32", capsys)
    assert diff <= 1e-5 * max(scale, 1.0), (diff, scale)


def test_dtype_flags_belong_to_their_format(full_run, capsys):
    assert cli_main(["export", str(full_run), "--format", "gguf", "--dtype", "bfloat16"]) == 2
    assert "with --format gguf use f32, f16, q8_0" in capsys.readouterr().err
    assert cli_main(["export", str(full_run), "--dtype", "q8_0"]) == 2
    assert "is for --format gguf" in capsys.readouterr().err
