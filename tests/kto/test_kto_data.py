"""KTO data: LLaMA-Factory's kto_en_demo (sharegpt) and alpaca rows with a kto_tag become store rows with the
tag and the prompt length as per-record columns and an untrained prompt; a collated micro-batch adds each row's
mismatched KL row: its own prompt with the previous row's answer in that batch (TRL's rotation)."""
from __future__ import annotations

import pytest

from launcher.config.compose import compose_config
from launcher.data import build_feedback_datasets
from launcher.models.tokenizers import build_char_tokenizer
from tests.conftest import SHARED_DEMO
from tests.kto.helpers import fast, write_feedback_data


def unpadded(batch: dict, i: int) -> tuple[list, list]:
    keep = batch["attention_mask"][i].bool()
    return batch["input_ids"][i][keep].tolist(), batch["labels"][i][keep].tolist()


def check_kl_rotation(collate, rows: list, chunk: int, cutoff_len: int) -> None:
    """Each collated micro-batch of ``chunk`` rows: the rows as stored, then row i's prompt + row i-1's answer."""
    for start in range(0, len(rows), chunk):
        group = rows[start: start + chunk]
        batch = collate(group)
        b = len(group)
        assert batch["input_ids"].shape[0] == 2 * b
        assert batch["kto_tag"].tolist() == [bool(r["kto_tag"]) for r in group]
        for i, row in enumerate(group):
            p, prev = row["prompt_len"], group[i - 1]
            assert row["labels"][:p] == [-100] * p and row["labels"][p:] == row["input_ids"][p:]
            assert unpadded(batch, i) == (row["input_ids"], row["labels"])
            kl_ids, kl_labels = unpadded(batch, b + i)
            answer = prev["input_ids"][prev["prompt_len"]:][: cutoff_len - p]
            assert kl_ids == row["input_ids"][:p] + answer and len(kl_ids) <= cutoff_len
            assert kl_labels == [-100] * p + answer


def test_alpaca_feedback_rows(tmp_path):
    data = write_feedback_data(tmp_path / "data", rows=12)
    cfg = compose_config([*fast(data), "method=kto", "train.micro_batch_size=4", "data.eval_datasets=[]"])
    bundle = build_feedback_datasets(cfg, build_char_tokenizer())
    assert bundle.kind == "kto" and len(bundle.train) == 12
    assert [r["kto_tag"] for r in bundle.train] == [1] * 6 + [0] * 6  # the store's int8 column
    assert bundle.train.column("kto_tag").tolist() == [1] * 6 + [0] * 6
    assert not bundle.packed
    check_kl_rotation(bundle.collate, list(bundle.train), 4, cfg.data.cutoff_len)


def test_kto_en_demo_sharegpt():
    if not (SHARED_DEMO / "kto_en_demo.json").is_file():
        pytest.skip(f"no kto_en_demo in {SHARED_DEMO}")
    cfg = compose_config(["method=kto", f"data.dataset_dir={SHARED_DEMO}", "data.datasets=[kto_en_demo]",
                          "data.eval_datasets=[]", "data.cutoff_len=256", "data.max_samples=24",
                          "data.use_cache=false", "train.micro_batch_size=8"])
    bundle = build_feedback_datasets(cfg, build_char_tokenizer())
    tags = [r["kto_tag"] for r in bundle.train]
    assert bundle.kind == "kto" and len(tags) == 24 and 1 in tags and 0 in tags
    assert all(len(r["input_ids"]) <= 256 for r in bundle.train)
    check_kl_rotation(bundle.collate, list(bundle.train), 8, 256)
