"""Rollouts: G completions per prompt from the policy, behind a small seam so that another backend (vLLM, as TRL
and ms-swift use) can stand in for transformers.

``GenerationEngine.generate(prompts, n, ...)`` takes token ids and gives token ids: the engine never renders or
decodes text, and the caller keeps the grouping (prompt k's n completions are rows k*n .. k*n+n-1).

``TransformersEngine`` runs the HF model itself with a KV cache (transformers' DynamicCache), all prompts of a
call in one left-padded batch, each prompt read once and its cache repeated for its n completions. Why not ``model.generate``: sampling takes an explicit ``torch.Generator`` here
(seeded per generation batch and rank, so rollouts are reproducible after a resume without saving RNG state),
and a sharded policy (ZeRO-3, FSDP) must run the same number of forwards on every rank: with ``collective`` the
ranks agree at each token whether any of them still decodes. The weights are gathered for the whole call by the
``weights`` context (launcher.engines: ZeRO-3 gathers every parameter, FSDP unshards) and released right after
it, so no full copy outlives the rollout.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class Rollout:
    completions: list[list[int]]
    """Generated ids per row, up to and including the end token when one was generated."""
    truncated: list[bool]
    """True where the row hit max_new_tokens without an end token."""


class GenerationEngine:
    name = "generation"

    def generate(self, prompts: list[list[int]], n: int, max_new_tokens: int, *, temperature: float = 1.0,
                 top_p: float = 1.0, greedy: bool = False, generator: Optional[torch.Generator] = None) -> Rollout:
        raise NotImplementedError

    def sync_weights(self) -> None:
        """After an optimizer step: make the engine generate with the policy's new weights (a no-op when the
        engine runs the policy module itself)."""


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits outside the smallest set of tokens whose probability reaches ``top_p`` set to -inf (the most likely
    token always stays)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


class TransformersEngine(GenerationEngine):
    name = "transformers"

    def __init__(self, model: torch.nn.Module, pad_token_id: int, eos_token_ids: list[int], device,
                 weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 collective: bool = False, autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.model, self.pad, self.eos = model, pad_token_id, list(eos_token_ids)
        self.device, self.weights, self.collective, self.autocast = device, weights, collective, autocast

    def _any_unfinished(self, unfinished: torch.Tensor) -> bool:
        flag = unfinished.any().to(torch.int64).reshape(1)
        if self.collective:
            from launcher.engines.distributed import all_reduce_max

            flag = all_reduce_max(flag)
        return bool(flag.item())

    @torch.no_grad()
    def generate(self, prompts, n, max_new_tokens, *, temperature=1.0, top_p=1.0, greedy=False, generator=None):
        from transformers import DynamicCache

        rows = [p for p in prompts for _ in range(n)]
        if not rows and not self.collective:
            return Rollout([], [])
        # Each prompt is read once (the prefill, most of a rollout's compute for short answers); its cache is
        # then repeated for its n completions.
        width = max((len(p) for p in prompts), default=1)
        ids = torch.full((max(len(prompts), 1), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            if p:
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        eos = torch.tensor(self.eos, device=self.device)
        size = len(rows) if rows else 1  # a rank with nothing to do runs one filler row
        out = torch.full((size, max_new_tokens), self.pad, dtype=torch.long, device=self.device)
        unfinished = torch.ones(size, dtype=torch.bool, device=self.device)
        if not rows:
            unfinished[:] = False  # a rank with nothing to do still runs the collective forwards (fillers)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.weights(), self.autocast(), warnings.catch_warnings():
                # transformers 5.2x renames past_key_values to cache; 5.0 knows only the old name (setup.cfg)
                warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
                cache = DynamicCache()
                position = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                                    use_cache=True, logits_to_keep=1).logits[:, -1].float()
                last_pos = position[:, -1]
                if rows and n > 1:
                    cache.batch_repeat_interleave(n)
                    mask, logits, last_pos = (t.repeat_interleave(n, dim=0) for t in (mask, logits, last_pos))
                steps = 0
                for t in range(max_new_tokens):
                    if greedy:
                        token = logits.argmax(-1)
                    else:
                        probs = top_p_filter(logits / temperature, top_p).softmax(-1)
                        token = torch.multinomial(probs.cpu() if generator is not None and generator.device.type == "cpu"
                                                  else probs, 1, generator=generator).view(-1).to(self.device)
                    token = torch.where(unfinished, token, torch.full_like(token, self.pad))
                    out[:, t] = token
                    unfinished = unfinished & ~torch.isin(token, eos)
                    steps = t + 1
                    if t == max_new_tokens - 1 or not self._any_unfinished(unfinished):
                        break
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                    last_pos = last_pos + 1
                    logits = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                                        past_key_values=cache, use_cache=True).logits[:, -1].float()
        finally:
            self.model.train(was_training)
        completions, truncated = [], []
        eos_set = set(self.eos)
        for row in out[: len(rows), :steps].tolist():
            end = next((k for k, tok in enumerate(row) if tok in eos_set), None)
            completions.append(row[: end + 1] if end is not None else row)
            truncated.append(end is None)
        return Rollout(completions, truncated)
