"""Checks of the config's shape: every value in range and every combination possible, as preflight lines.

The rules themselves are config validation and live with the schema (``launcher.config.ranges``: the range of
every number; ``launcher.config.schema.check_combinations``: impossible choices), because ``parse_config``
applies them too; this module turns them into the preflight's list and adds what needs the whole config
(batch sizes that divide the world size).
"""
from __future__ import annotations

from launcher.checks.problems import Problems
from launcher.config.schema import Config, resolve_grad_accum, validation_problems


def check_config(problems: Problems, cfg: Config) -> None:
    found = validation_problems(cfg)
    problems.errors.extend(found)
    problems.config_valid = not found
    if not found and cfg.method.name == "grpo":
        from launcher.training.rewards import reward_spec_problems

        problems.errors.extend(reward_spec_problems(cfg))
    if not found and cfg.method.name == "ppo":
        from launcher.training.reward_model_run import reward_model_problems

        problems.errors.extend(reward_model_problems(cfg))
    if not found and cfg.method.name in ("grpo", "ppo"):
        from launcher.checks.model import rollout_model_problems

        problems.errors.extend(rollout_model_problems(cfg))


def check_batch(problems: Problems, cfg: Config) -> None:
    if problems.config_valid:  # else validation_problems reported it already
        resolve_grad_accum(cfg)
