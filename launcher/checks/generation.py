"""The rollout engine at the dry run: generation.engine=vllm needs the vLLM venv (``make vllm-env``), which is
refused here, with that command, rather than on the first rollout."""
from __future__ import annotations

from launcher.checks.problems import Problems
from launcher.config.schema import Config


def check_generation_engine(problems: Problems, cfg: Config) -> None:
    if cfg.generation.engine != "vllm":
        return
    from launcher.inference.vllm_engine import missing_message, vllm_python

    if vllm_python(cfg.generation.vllm_python) is None:
        problems.errors.append(missing_message("generation.engine=vllm", cfg.generation.vllm_python))
