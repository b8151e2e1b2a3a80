"""KTO at micro-batch 1 (LLaMA-Factory's qwen3_lora_kto.yaml): a batch of one row has no other answer, so its KL
row takes the answer LLaMA-Factory 0.9.5 pairs it with when it preprocesses (FeedbackDatasetProcessor: within
blocks of 1000 samples in file order, sample i takes sample i-1's answer, the first the last's)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.data import build_feedback_datasets, kl_partner_records
from tests.conftest import SHARED_DEMO

FIXTURE = Path(__file__).with_name("fixtures") / "lf_kto_en_demo.json"
# kto_en_demo is LLaMA-Factory's (its data folder); the pure pairing test below needs nothing.
needs_lf_data = pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason=f"no LLaMA-Factory demo data at {SHARED_DEMO}")


def digest(ids: list) -> str:
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]


def test_partners_rotate_within_blocks_of_each_source():
    assert kl_partner_records([5, 3], block=2).tolist() == [1, 0, 3, 2, 4, 6, 5, 7]
    assert kl_partner_records([300]).tolist() == [299] + list(range(299))
    assert kl_partner_records([1200])[1000] == 1199 and kl_partner_records([1200])[999] == 998


def kl_rows(overrides: list, tokenizer=None):
    cfg = compose_config(["method=kto_lora", "data=kto_demo", f"data.dataset_dir={SHARED_DEMO}", "data.val_size=0",
                          "data.use_cache=false", "train.micro_batch_size=1", *overrides])
    if tokenizer is None:
        from launcher.models.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    bundle = build_feedback_datasets(cfg, tokenizer)
    for row in bundle.train:
        batch = bundle.collate([row])
        keep = batch["attention_mask"][1].bool()
        yield row, batch["input_ids"][1][keep].tolist(), batch["labels"][1][keep].tolist()


@needs_lf_data
def test_a_batch_of_one_row_takes_the_previous_samples_answer():
    from launcher.models.tokenizers import build_char_tokenizer

    rows = list(kl_rows(["data.max_samples=12", "data.cutoff_len=4096"], build_char_tokenizer()))
    assert len(rows) == 12
    for i, (row, kl_ids, kl_labels) in enumerate(rows):
        prev = rows[i - 1][0]  # row 0 takes row 11's
        p, q = row["prompt_len"], prev["prompt_len"]
        answer = prev["input_ids"][q:][: 4096 - p]  # cut at cutoff_len (characters: some rows are long)
        assert kl_ids == row["input_ids"][:p] + answer
        assert kl_labels == [-100] * p + answer


@needs_lf_data
@pytest.mark.skipif(not FIXTURE.is_file(), reason="no LLaMA-Factory fixture (tests/kto/fixtures/make_lf_kto_reference.py)")
def test_kl_rows_equal_llamafactorys_on_kto_en_demo():
    """Every row of kto_en_demo (qwen template, Qwen's tokenizer): our row and its KL row equal LF 0.9.5's
    input_ids, labels, kl_input_ids and kl_labels (compared by digest; the fixture keeps digests, not 300 token
    lists). LF's qwen template puts its default system prompt before every sample; ours must too."""
    fixture = json.loads(FIXTURE.read_text())
    ours = list(kl_rows(["model=tiny_qwen2_qwentok", "data.template=qwen", f"data.cutoff_len={fixture['cutoff_len']}"]))
    assert len(ours) == len(fixture["rows"]) == 300
    for k, ((row, kl_ids, kl_labels), lf) in enumerate(zip(ours, fixture["rows"])):
        assert (digest(row["input_ids"]), digest(row["labels"]), bool(row["kto_tag"])) == (
            lf["input_ids"], lf["labels"], lf["kto_tag"]), k
        assert (digest(kl_ids), digest(kl_labels)) == (lf["kl_input_ids"], lf["kl_labels"]), k
