"""Our rows for LLaMA-Factory's mllm_demo equal what LLaMA-Factory 0.9.5 makes (fixtures/make_lf_reference.py):
input_ids, labels, image tokens per image and grids, for its qwen2_vl, qwen3_vl and qwen3_vl_nothink templates."""
import json

import pytest

from launcher.data import build_datasets
from tests.vl.helpers import FIXTURE, lf_demo_dir, tokenizer_for, vl_config

DEMO = lf_demo_dir()
pytestmark = pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (../shared/datasets)")


@pytest.mark.parametrize("model,template", [("tiny_qwen2_vl", "qwen2_vl"), ("tiny_qwen2_5_vl", "qwen2_vl"),
                                            ("tiny_qwen3_vl", "qwen3_vl"), ("tiny_qwen3_vl", "qwen3_vl_nothink")])
def test_mllm_demo_equals_llamafactory(model, template):
    templates = json.loads(FIXTURE.read_text())["templates"]
    if template not in templates:
        pytest.skip(f"the fixture has no {template} rows yet: rerun fixtures/make_lf_reference.py")
    expected = templates[template]
    named = {"template": template} if template.endswith("_nothink") else {}  # else: from the model family
    bundle = build_datasets(vl_config(model, DEMO, ["mllm_demo"], cutoff_len=4096, **named), tokenizer_for(model))
    assert bundle.stats["template"] == template  # chosen from the model family, as LF users name it
    rows = bundle.train
    assert len(rows) == len(expected)
    pad = bundle.vision.ids["image_pad"]
    for k, (ours, lf) in enumerate(zip(rows, expected)):
        assert ours["input_ids"] == lf["input_ids"], f"row {k}"
        assert ours["labels"] == lf["labels"], f"row {k}"
        assert ours["image_grid_thw"] == lf["image_grid_thw"], f"row {k}"
        assert sum(lf["image_tokens"]) == ours["input_ids"].count(pad)
    assert bundle.stats["image_tokens"] == sum(sum(r["image_tokens"]) for r in expected)


def test_preview_shows_image_positions_and_counts(capsys):
    from launcher.data.cli import data_main

    assert data_main(["preview", "-n", "2", "--color", "never", "data=mllm_demo", "model=tiny_qwen2_vl",
                      f"data.dataset_dir={DEMO}", "data.use_cache=false"]) == 0
    out = capsys.readouterr().out
    assert "image 0: tokens [14, 82) = vision_start + 66 image tokens + vision_end, grid 1x12x22" in out
    assert "<|vision_start|><|image_pad|>*66<|vision_end|>Who are they?" in out
    assert "images=8  image_tokens=550" in out
