"""Greedy answers to held-out prompts, and the exact-match score that shows whether a model learned."""
from __future__ import annotations

import torch


def prompt_and_reference(sample: dict) -> tuple[list, str]:
    """The conversation up to its last assistant turn, and that turn's text."""
    messages = sample["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: list[list], max_new_tokens: int, device,
                     batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0,
                     top_p: float = 1.0) -> list[str]:
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge
    answers = []
    try:
        for start in range(0, len(conversations), batch_size):
            texts = [
                tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in conversations[start: start + batch_size]
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            kwargs = {"do_sample": do_sample}
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, **kwargs,
            )
            new = out[:, enc["input_ids"].shape[1]:]
            answers += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def exact_match(predictions: list[str], references: list[str]) -> float:
    if not references:
        return 0.0
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
    return hits / len(references)


def exact_match_eval(model, tokenizer, samples: list, max_new_tokens: int, device) -> dict:
    prompts, refs = zip(*(prompt_and_reference(s) for s in samples))
    preds = generate_answers(model, tokenizer, list(prompts), max_new_tokens, device)
    return {
        "exact_match": exact_match(preds, list(refs)),
        "n": len(refs),
        "examples": [{"reference": r, "prediction": p} for r, p in list(zip(refs, preds))[:5]],
    }
