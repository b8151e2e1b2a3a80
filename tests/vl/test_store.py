"""Image references in the memory-mapped token store: rows made on access carry each sample's image paths and
grids (packed rows: in order, with how many belong to each sample), the same for 1 or 2 worker processes and
from a cache hit; the store holds them as flat files (paths as UTF-8 bytes + offsets), never as a pickle."""
from __future__ import annotations

import json

import pytest

from launcher.data import build_datasets
from tests.vl.helpers import tokenizer_for, vl_config
from tests.vl.test_positions import write_vl_dataset

FAMILY = "tiny_qwen2_vl"


@pytest.mark.parametrize("packing", [False, True])
def test_rows_carry_their_images_for_any_worker_count_and_cache_hit(tmp_path, packing):
    samples = write_vl_dataset(tmp_path)
    rows = {}
    for num_proc in (1, 2):
        cfg = vl_config(FAMILY, tmp_path, ["vl"], cutoff_len=512, packing=packing, val_size=0, num_proc=num_proc,
                        use_cache=True, cache_dir=str(tmp_path / f"cache{num_proc}"), preprocess_batch_size=2)
        bundle = build_datasets(cfg, tokenizer_for(FAMILY))
        again = build_datasets(cfg, tokenizer_for(FAMILY))
        assert again.stats["cache_hit"] and list(again.train) == list(bundle.train)
        rows[num_proc] = list(bundle.train)
        folder = tmp_path / f"cache{num_proc}" / bundle.stats["cache_key"]
        for name in ("image_offsets.npy", "image_grid_thw.npy", "image_paths.bin", "image_path_offsets.npy"):
            assert (folder / name).is_file(), name
        assert bundle.stats["images"] == sum(len(s["images"]) for s in samples)
    assert rows[1] == rows[2]
    wanted = sorted(str(tmp_path / p) for s in samples for p in s["images"])
    assert sorted(p for r in rows[1] for p in r["images"]) == wanted
    for r in rows[1]:
        assert len(r["image_grid_thw"]) == len(r["images"])
        if packing:
            assert sum(r["segment_images"]) == len(r["images"]) and len(r["segment_images"]) == len(r["segment_lengths"])
        pads = sum(t == 151655 for t in r["input_ids"])
        assert pads == sum(t * h * w // 4 for t, h, w in r["image_grid_thw"])


def test_text_model_store_has_no_image_files(tmp_path):
    from tests.data.helpers import char_tokenizer
    from launcher.config.schema import parse_config

    (tmp_path / "t.json").write_text(json.dumps([{"instruction": "hi", "output": "ho"}] * 4))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"t": {"file_name": "t.json"}}))
    cfg = parse_config({"data": {"dataset_dir": str(tmp_path), "datasets": ["t"], "val_size": 0, "use_cache": True,
                                 "cache_dir": str(tmp_path / "cache")}})
    bundle = build_datasets(cfg, char_tokenizer())
    assert "images" not in bundle.train[0]
    assert not list((tmp_path / "cache" / bundle.stats["cache_key"]).glob("image*"))
