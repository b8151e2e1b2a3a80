"""The packing planner (pure), collated packed batches, and the preprocess-once cache."""
import json
import random

import pytest
import torch

from launcher.data import build_datasets
from launcher.data.cache import cached
from launcher.data.collate import block_causal_mask, collate_rows
from launcher.data.packing import pack_rows, packing_fill, plan_packs
from tests.data.helpers import char_tokenizer, make_config, write_dataset


def test_plan_packs_best_fit_decreasing():
    plan = plan_packs([5, 3, 7, 2, 4], 10)
    # 7 -> new bin0 (3 free); 5 -> new bin1; 4 -> bin1 (1 free); 3 -> bin0 (0 free); 2 fits nowhere -> new bin2
    assert plan == [[2, 1], [0, 4], [3]]


def test_plan_packs_properties():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    plan = plan_packs(lengths, 128)
    assert sorted(i for b in plan for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in plan)
    lower_bound = -(-sum(lengths) // 128)
    assert len(plan) <= lower_bound * 1.05 + 1
    with pytest.raises(ValueError):
        plan_packs([200], 128)


def test_packed_collate_positions_labels_and_mask():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
    [packed] = pack_rows(rows, [[0, 1]])
    assert packed["position_ids"] == [0, 1, 2, 0, 1] and packed["segment_lengths"] == [3, 2]
    assert packing_fill([packed], 5) == 1.0
    short = {"input_ids": [7, 8], "labels": [-100, 8], "position_ids": [0, 1], "segment_lengths": [2]}
    batch = collate_rows([packed, short], pad_token_id=0, attn_implementation="sdpa")
    assert batch["shift_labels"].tolist() == [[2, 3, -100, 5, -100], [8, -100, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    mask = batch["attention_mask"]
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 5, 5)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    assert mask[1, 0, 3].int().tolist() == [0, 0, 1, 1, 0]  # padding attends only to padding
    eager = block_causal_mask([[3, 2]], 5, "eager")
    assert eager.dtype == torch.float32 and eager[0, 0, 3, 0] < -1e30 and eager[0, 0, 3, 3] == 0


def test_unpacked_batch_has_padding_mask():
    batch = collate_rows([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}], 0)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["shift_labels"].tolist() == [[2, 3, -100], [-100, -100, -100]]


def test_cache_is_reused_and_invalidated(tmp_path):
    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(5)]
    path = write_dataset(tmp_path / "data", "d", rows)
    cfg = make_config(tmp_path / "data", ["d"], cache_dir=str(tmp_path / "cache"), packing=True, cutoff_len=64)
    first = build_datasets(cfg, char_tokenizer())
    second = build_datasets(cfg, char_tokenizer())
    assert not first.stats["cache_hit"] and second.stats["cache_hit"]
    assert first.train == second.train and first.stats["cache_key"] == second.stats["cache_key"]
    path.write_text(json.dumps(rows[:4]))
    third = build_datasets(cfg, char_tokenizer())
    assert not third.stats["cache_hit"] and third.stats["samples"] == 4
    other = make_config(tmp_path / "data", ["d"], cache_dir=str(tmp_path / "cache"), packing=True, cutoff_len=32)
    assert not build_datasets(other, char_tokenizer()).stats["cache_hit"]


def test_cache_builds_once(tmp_path):
    calls = []
    value, hit = cached(tmp_path, "k", lambda: calls.append(1) or {"x": 1})
    again, hit2 = cached(tmp_path, "k", lambda: calls.append(1) or {"x": 2})
    assert (value, hit, again, hit2, len(calls)) == ({"x": 1}, False, {"x": 1}, True, 1)
