"""Every local dataset of LLaMA-Factory's demo dataset_info.json loads and tokenizes (skipped when absent)."""
import json

import pytest

from launcher.data import build_datasets
from tests.data.helpers import lf_demo_dir, make_config, qwen_tokenizer

DEMO = lf_demo_dir()
pytestmark = pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (set LAUNCHER_LF_DEMO_DIR)")
INFO = json.loads((DEMO / "dataset_info.json").read_text()) if DEMO else {}
MEDIA_COLUMNS = ("images", "videos", "audios")
LOCAL = sorted(k for k, v in INFO.items() if "file_name" in v and not set(v.get("columns", {})) & set(MEDIA_COLUMNS))
MEDIA = sorted(k for k, v in INFO.items() if "file_name" in v and set(v.get("columns", {})) & set(MEDIA_COLUMNS))


@pytest.mark.parametrize("name", MEDIA)
def test_demo_media_datasets_are_refused_for_a_text_model(name):
    """A text model refuses images, videos and audio (tests/vl trains mllm_demo and mllm_video_demo on a VL
    model, mllm_audio_demo on Qwen2-Audio)."""
    from launcher.errors import DataError

    columns = INFO[name].get("columns", {})
    audio = "audios" in columns
    match = (r"the row has audios and videos: a model that takes both \(the Qwen2.5-Omni thinker"
             if audio and "videos" in columns else r"has no audio tower" if audio else r"has no vision tower")
    with pytest.raises(DataError, match=match):
        build_datasets(make_config(DEMO, [name], max_samples=8, use_cache=False), qwen_tokenizer())


@pytest.mark.parametrize("name", LOCAL)
def test_demo_dataset_tokenizes(name):
    bundle = build_datasets(make_config(DEMO, [name], max_samples=8, cutoff_len=1024, use_cache=False,
                                        packing=True), qwen_tokenizer())
    assert bundle.stats["samples"] > 0 and bundle.stats["trained_tokens"] > 0
    assert bundle.stats["dropped"] == 0
    batch = bundle.collate(bundle.train[:2])
    assert (batch["shift_labels"] != -100).sum() > 0


def test_hub_entries_fail_fast_offline(monkeypatch):
    from launcher.errors import DataError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="alpaca_en.*not reachable"):
        build_datasets(make_config(DEMO, ["alpaca_en"], use_cache=False), qwen_tokenizer())
