"""Tiny random-init Qwen2-VL, Qwen2.5-VL and Qwen3-VL: forward/backward through our loss, saved models (full and
LoRA) reload through AutoModelForImageTextToText with the same logits, model=hf folders load the VL class and
their own image processor, freezing and LoRA targets."""
import json

import pytest
import torch

from launcher.config.schema import parse_config
from launcher.data import build_datasets
from launcher.engines.model_build import apply_lora
from launcher.models.build import build_base_model
from launcher.models.vision import (VisionModelInfo, auto_class_for, build_image_processor, freeze_vision_parts,
                                    save_processor_files, torchvision_usable)
from launcher.training.loss import CausalLMLoss
from tests.vl.helpers import FAMILIES, model_yaml, tiny_model, tokenizer_for, vl_config
from tests.vl.test_positions import write_vl_dataset


def batch_for(family, tmp_path):
    write_vl_dataset(tmp_path)
    bundle = build_datasets(vl_config(family, tmp_path, ["vl"], cutoff_len=512), tokenizer_for(family))
    return bundle.collate(bundle.train[:2])


def logits_of(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], pixel_values=batch["pixel_values"],
                     image_grid_thw=batch["image_grid_thw"], mm_token_type_ids=batch["mm_token_type_ids"],
                     use_cache=False).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_backward_save_reload(tmp_path, family):
    batch = batch_for(family, tmp_path)
    model = tiny_model(family)
    assert type(model).__name__.endswith("ForConditionalGeneration")
    loss = CausalLMLoss(model)(**batch)
    loss.backward()
    visual = [p.grad for n, p in model.named_parameters() if ".visual." in f".{n}" and p.grad is not None]
    assert visual and any(g.abs().sum() > 0 for g in visual), "gradients must reach the vision tower"
    model.eval()
    out = tmp_path / "saved"
    model.save_pretrained(out)
    template = "qwen3_vl" if family == "tiny_qwen3_vl" else "qwen2_vl"
    info = VisionModelInfo(model.config.model_type, template, None)
    tokenizer_for(family).save_pretrained(out)
    save_processor_files(out, build_image_processor(info), tokenizer_for(family), info)
    from transformers import AutoTokenizer

    rendered = AutoTokenizer.from_pretrained(out).apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>" in rendered
    assert rendered.startswith("<|im_start|>system") == (template == "qwen2_vl")
    assert auto_class_for(out).__name__ == "AutoModelForImageTextToText"
    reloaded = auto_class_for(out).from_pretrained(out).eval()
    assert torch.allclose(logits_of(model, batch), logits_of(reloaded, batch), atol=1e-5)
    # model=hf on the folder: the VL class, and the folder's own processor settings
    cfg = parse_config({"model": {"name": "saved", "name_or_path": str(out)}, "data": {"datasets": ["x"]}})
    built = build_base_model(cfg, tokenizer_for(family), "sdpa", torch.float32).eval()
    assert torch.allclose(logits_of(built, batch), logits_of(model, batch), atol=1e-5)
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["patch_size"] == (16 if family == "tiny_qwen3_vl" else 14)
    if torchvision_usable():  # where torchvision loads, AutoProcessor reads what we wrote
        from transformers import AutoProcessor

        assert AutoProcessor.from_pretrained(out).image_processor.patch_size == saved["patch_size"]


def test_lora_reload_same_logits(tmp_path):
    from peft import PeftModel

    family = "tiny_qwen2_vl"
    batch = batch_for(family, tmp_path)
    cfg = parse_config({"model": model_yaml(family), "data": {"datasets": ["x"]},
                        "method": {"name": "lora", "finetuning": "lora", "lora": {"r": 4}}})
    base = tiny_model(family)
    base.save_pretrained(tmp_path / "base")  # as training does: the base before the adapter is injected
    model = apply_lora(base, cfg.method.lora)
    with torch.no_grad():  # a non-zero adapter, so that reloading it matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    base = auto_class_for(tmp_path / "base").from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert torch.allclose(logits_of(model, batch), logits_of(reloaded, batch), atol=1e-5)


def test_lora_leaves_the_vision_tower_alone_unless_asked():
    """Qwen2.5-VL's vision MLP is named gate/up/down_proj like the text MLP: suffixes alone would adapt both."""
    family = "tiny_qwen2_5_vl"
    cfg = parse_config({"model": model_yaml(family), "data": {"datasets": ["x"]},
                        "method": {"name": "lora", "finetuning": "lora", "lora": {"target_modules": ["gate_proj", "up_proj", "q_proj"]}}})
    adapted = [n for n, _ in apply_lora(tiny_model(family), cfg.method.lora).named_modules() if n.endswith("lora_A")]
    assert adapted and not any(".visual." in n for n in adapted)
    assert any("language_model" in n and "gate_proj" in n for n in adapted)
    default = parse_config({"model": model_yaml(family), "data": {"datasets": ["x"]}, "method": {"name": "lora", "finetuning": "lora"}})
    adapted = [n for n, _ in apply_lora(tiny_model(family), default.method.lora).named_modules() if n.endswith("lora_A")]
    assert adapted and not any(".visual." in n for n in adapted)
    asked = parse_config({"model": model_yaml(family), "data": {"datasets": ["x"]},
                          "method": {"name": "lora", "finetuning": "lora", "lora": {"include_vision": True}}})
    adapted = [n for n, _ in apply_lora(tiny_model(family), asked.method.lora).named_modules() if n.endswith("lora_A")]
    assert any(".visual.blocks." in n and "gate_proj" in n for n in adapted)


@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_groups(family):
    model = tiny_model(family)
    frozen = freeze_vision_parts(model, True, True, False)
    assert frozen == ["vision_tower", "projector"]
    names = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in names.items() if ".visual." in f".{n}")
    assert all(v for n, v in names.items() if "language_model" in n)
    model = tiny_model(family)
    freeze_vision_parts(model, True, False, True)
    names = {n: p.requires_grad for n, p in model.named_parameters()}
    assert any(v for n, v in names.items() if "visual.merger" in n)
    assert not any(v for n, v in names.items() if "language_model" in n or "visual.blocks" in n)
