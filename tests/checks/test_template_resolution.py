"""The preflight resolves the chat template exactly as training will (launcher.data.template_request and
choose_renderer, `auto` and the fallback included), and refuses images for a template without an image slot,
naming the model's own template."""
import pytest

from launcher.config.compose import compose_config
from launcher.data import template_request
from launcher.errors import PreflightError
from launcher.models.vision import vision_info
from launcher.checks.preflight import run_preflight


def request(*overrides, kind="sft", tokenizer=None):
    cfg = compose_config(list(overrides), check=False)
    return template_request(cfg.data, kind, vision_info(cfg.model), tokenizer)


def test_auto_is_unset_for_training_and_preflight_alike():
    assert request("model=tiny_qwen3_vl", "data.template=auto") == "qwen3_vl"  # the family's, as when unset
    assert request("model=tiny_qwen3_vl") == "qwen3_vl"
    assert request("model=tiny_qwen3_vl", "data.template=qwen3_vl_nothink") == "qwen3_vl_nothink"
    assert request("model=tiny_qwen2", "data.template=auto") is None  # the tokenizer's own (or its fallback)
    assert request("model=tiny_qwen2", kind="pt") == "plain"  # no chat template: plain text


def test_the_fallback_is_said_by_the_preflight():
    warnings = run_preflight(compose_config(["data=alpaca_demo", "model=tiny_qwen2_qwentok"]))
    assert any("using the named template 'qwen3_nothink'" in w and "training does the same" in w
               for w in warnings), warnings


def test_images_with_a_template_without_slot_name_the_models_template():
    with pytest.raises(PreflightError, match=r"data.template=chatml has no image slot; use data.template=qwen2_vl"):
        run_preflight(compose_config(["experiment=bench_vl", "data.template=chatml"]))
    run_preflight(compose_config(["experiment=bench_vl", "data.template=auto"]))
