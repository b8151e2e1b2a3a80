"""The selection point of the rollout engine (``generation.engine``): the recipes of online RL ask here for the
GenerationEngine their objective samples with, so that the choice lives in one place."""
from __future__ import annotations

import contextlib
from typing import Callable

from launcher.errors import ConfigError
from launcher.inference.rollout import GenerationEngine, TransformersEngine


def rollout_engine(cfg, model, pad_token_id: int, eos_token_ids: list[int], device, max_model_len: int,
                   weights: Callable = contextlib.nullcontext, collective: bool = False,
                   autocast: Callable = contextlib.nullcontext, rank: int = 0) -> GenerationEngine:
    """``max_model_len``: prompt + completion tokens the engine must hold (vLLM sizes its context by it)."""
    if cfg.generation.engine == "transformers":
        return TransformersEngine(model, pad_token_id, eos_token_ids, device, weights=weights, collective=collective,
                                  autocast=autocast)
    from launcher.inference.vllm_engine import VLLMEngine, missing_message, vllm_python

    python = vllm_python(cfg.generation.vllm_python)
    if python is None:
        raise ConfigError(missing_message("generation.engine=vllm", cfg.generation.vllm_python))
    return VLLMEngine(model, pad_token_id, eos_token_ids, python, max_model_len, cfg.generation.vllm_kv_cache_gib,
                      seed=cfg.train.seed + rank, weights=weights)
