"""Greedy answers to held-out prompts, and the exact-match score that shows whether a model learned."""
from __future__ import annotations

from typing import Optional

import torch


def prompt_and_reference(sample: dict) -> tuple[list, str]:
    """The conversation up to its last assistant turn, and that turn's text."""
    messages = sample["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the tokenizer's eos and the generation config's (Qwen lists two)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model.generation_config, "eos_token_id", None)
    ids.update(gen if isinstance(gen, (list, tuple)) else [gen])
    return sorted(i for i in ids if i is not None)


def sampling_kwargs(do_sample: bool, temperature: float = 1.0, top_p: float = 1.0) -> dict:
    if do_sample:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p}
    # Greedy; unset the sampling flags a generation config may carry (silences "flags set" warnings).
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def answer_ids(new_ids: list[int], stop: list[int]) -> list[int]:
    """The generated ids up to (not including) the first end-of-answer id."""
    ends = [i for i, t in enumerate(new_ids) if t in stop]
    return new_ids[: ends[0]] if ends else new_ids


def vision_inputs(enc: dict, images: list, vision, device, videos: Optional[list] = None) -> dict:
    """pixel_values, image_grid_thw and mm_token_type_ids for prompts whose vision spans are already expanded
    (``launcher.data.vision.expand_prompt``); images: per prompt, [(path, grid), ...]; videos: per prompt, the
    video plans expand_prompt made (pixel_values_videos, video_grid_thw, and Qwen2.5-VL's second_per_grid_ts)."""
    from launcher.data.vision import load_pixels

    flat = [item for per_prompt in images for item in per_prompt]
    types = (enc["input_ids"] == vision.ids["image_pad"]).long()
    extra = {"mm_token_type_ids": types + 2 * (enc["input_ids"] == vision.ids["video_pad"]).long()}
    if flat:
        pixels = load_pixels([p for p, _ in flat], [g for _, g in flat], vision)
        extra.update(pixel_values=pixels["pixel_values"].to(device), image_grid_thw=pixels["image_grid_thw"].to(device))
    plans = [plan for per_prompt in (videos or []) for plan in per_prompt]
    if plans:
        from launcher.data.video import load_video_pixels

        frames = load_video_pixels([p.source for p in plans], [list(p.grid) for p in plans], vision.video)
        extra.update(pixel_values_videos=frames["pixel_values_videos"].to(device),
                     video_grid_thw=frames["video_grid_thw"].to(device))
        if vision.video.family == "qwen2_5_vl":
            extra["second_per_grid_ts"] = torch.tensor([p.seconds_per_grid for p in plans], device=device)
    return extra


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int, device, do_sample: bool = False,
                   temperature: float = 1.0, top_p: float = 1.0, images: Optional[list] = None,
                   vision=None, audios: Optional[list] = None, audio=None) -> tuple[list[str], list[int]]:
    """Answers to already-rendered prompts, and how many tokens each generated (its end token included).

    VL models: ``images`` per prompt as [(path, grid)], with ``vision`` (a VisionData); the prompts carry
    the expanded vision spans. The model computes its 3-D positions itself from mm_token_type_ids.
    Audio models: ``audios`` per prompt as [AudioPlan], with ``audio`` (an AudioData); the prompts carry the
    expanded audio spans, whose features fill them in order."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tokenizer.padding_side = side
    if vision is not None:
        enc = dict(enc, **vision_inputs(enc, images or [[] for _ in prompts], vision, device))
    plans = [plan for per_prompt in (audios or []) for plan in per_prompt]
    if audio is not None and plans:
        from launcher.data.audio import load_audio_features

        features = load_audio_features([p.source for p in plans], [p.grid() for p in plans], audio)
        enc = dict(enc, **{k: v.to(device) for k, v in features.items()})
    stop = eos_ids(model, tokenizer)
    try:
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=stop, **sampling_kwargs(do_sample, temperature, top_p))
    finally:
        model.train(was_training)
    texts, counts = [], []
    for row in out[:, enc["input_ids"].shape[1]:].cpu().tolist():
        answer = answer_ids(row, stop)
        texts.append(tokenizer.decode(answer, skip_special_tokens=True).strip())
        counts.append(min(len(answer) + 1, len(row)))
    return texts, counts


def exact_match(predictions: list[str], references: list[str]) -> float:
    if not references:
        return 0.0
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
    return hits / len(references)


def audio_data_of(model, tokenizer):
    """An audio model's AudioData (its family's feature extractor), for held-out samples with audio; None for
    other models (their prompts keep ``<audio>`` as text, as training's data check refuses such rows anyway)."""
    from launcher.data.audio import AudioData
    from launcher.models.audio import AudioModelInfo, build_feature_extractor, is_audio_model
    from launcher.models.vision import unwrap

    if not is_audio_model(model):
        return None
    family = unwrap(model).config.model_type
    extractor = build_feature_extractor(AudioModelInfo(family, family))
    return AudioData(extractor, extractor.sampling_rate).with_tokenizer(tokenizer)


def exact_match_eval(model, tokenizer, samples: list, max_new_tokens: int, device, render,
                     batch_size: int = 16, vision=None, on_batch=None) -> dict:
    """Greedy answers to ``samples``' prompts, rendered by ``render`` (launcher.inference.prompts.prompt_renderer,
    the template training used), scored by exact match. ``vision``: a VL model's VisionData (images used).
    ``on_batch``: called after each batch of ``batch_size`` prompts (a progress bar)."""
    from launcher.data.vision import expand_prompt

    pairs = [prompt_and_reference(s) for s in samples]
    audio = audio_data_of(model, tokenizer) if vision is None and any(s.get("audios") for s in samples) else None
    images, audios = [], []
    prompts = []
    for (conv, _), s in zip(pairs, samples):
        if audio is not None:
            from launcher.data.audio import expand_audio_placeholders, plan_audio

            plans = [plan_audio(str(a), audio, "exact match") for a in s.get("audios") or []]
            conv = expand_audio_placeholders(conv, plans, audio)
            audios.append(plans)
        if vision is not None:
            conv, grids = expand_prompt(conv, s.get("images") or [], vision)
            images.append(list(zip(s.get("images") or [], grids)))
        prompts.append(render(conv, s.get("tools")))
    refs = [ref for _, ref in pairs]
    preds = []
    for start in range(0, len(prompts), batch_size):
        chunk = images[start: start + batch_size] if vision is not None else None
        preds += generate_texts(model, tokenizer, prompts[start: start + batch_size], max_new_tokens, device,
                                images=chunk, vision=vision, audios=audios[start: start + batch_size],
                                audio=audio)[0]
        if on_batch is not None:
            on_batch()
    return {
        "exact_match": exact_match(preds, refs),
        "n": len(refs),
        "examples": [{"reference": r, "prediction": p} for r, p in list(zip(refs, preds))[:5]],
    }
