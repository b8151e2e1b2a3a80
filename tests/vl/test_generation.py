"""Greedy generation with images (the exact-match check, predict and chat share it): batched prompts with
left padding give the same answers as each prompt alone, and the answer depends on the image."""
import torch

from launcher.data import build_datasets
from launcher.inference.generation import exact_match_eval, generate_texts
from launcher.inference.prompts import prompt_renderer
from launcher.data.vision import expand_prompt
from tests.vl.helpers import REPO, tiny_model, tokenizer_for, vl_config


def test_batched_generation_with_images_equals_one_by_one():
    family = "tiny_qwen2_vl"
    cfg = vl_config(family, REPO / "data", ["vl_shapes"], eval_datasets=["vl_shapes_eval"], max_samples=8)
    tok = tokenizer_for(family)
    bundle = build_datasets(cfg, tok)
    samples = bundle.eval_samples[:4]
    model = tiny_model(family, seed=3)
    render = prompt_renderer(tok, cfg)
    batched = exact_match_eval(model, tok, samples, 6, torch.device("cpu"), render, batch_size=4, vision=bundle.vision)
    assert batched["n"] == 4
    one = [exact_match_eval(model, tok, [s], 6, torch.device("cpu"), render, vision=bundle.vision)["examples"][0]
           for s in samples]
    assert [e["prediction"] for e in batched["examples"]] == [e["prediction"] for e in one]
    # the rendered prompt carries the image span and LF's qwen2_vl system prompt
    conv, grids = expand_prompt(samples[0]["messages"][:1], samples[0]["images"], bundle.vision)
    prompt = render(conv)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert prompt.count("<|image_pad|>") == grids[0][1] * grids[0][2] // 4
    # the image reaches the answer: another image, same question, different logits at the first answer token
    other = dict(samples[0], images=samples[1]["images"])
    scores = []
    for s in (samples[0], other):
        conv, grids = expand_prompt(s["messages"][:1], s["images"], bundle.vision)
        texts, _ = generate_texts(model, tok, [render(conv)], 1, torch.device("cpu"),
                                  images=[list(zip(s["images"], grids))], vision=bundle.vision)
        enc = tok([render(conv)], return_tensors="pt", add_special_tokens=False)
        from launcher.inference.generation import vision_inputs

        with torch.no_grad():
            scores.append(model(**enc, **vision_inputs(enc, [list(zip(s["images"], grids))], bundle.vision, "cpu")).logits[0, -1])
    assert not torch.allclose(scores[0], scores[1])
