"""Preflight: refuse, before anything is queued, a run that would fail after waiting for nodes.

``run_preflight(cfg)`` runs every check, collects every problem (so one round trip fixes them all) and
raises ``PreflightError`` listing them, one line each, naming the key and what to do. Things that might
still work (a hub model that is not cached here) come back as warnings.

Which module owns which check (a new check goes to the one its subject names, and into ``CHECKS``):

- ``launcher.checks.config``: every value in range, every combination possible, batch sizes divide the world
  (the rules are ``launcher.config.ranges`` and ``launcher.config.schema``: parsing applies them too);
- ``launcher.checks.resources``: cluster settings coherent; what the run asks for exists (CPUs or GPUs here,
  the SLURM partition's nodes, CPUs, memory and GPUs, the engine's and optimizer's packages, QLoRA's and the 8-bit
  optimizers' GPU); run.resume is a
  complete checkpoint; the output root is writable;
- ``launcher.checks.data``: datasets exist, their rows (and images) parse, each is the kind the method trains
  on and carries no column the run would not use;
- ``launcher.checks.model``: the model's config and weights are readable and whole, a hub model is reachable,
  LoRA targets and frozen modules exist, its dtype is what will run, the tokenizer has a chat template;
- ``launcher.checks.memory``: memory per GPU and per node fits (``launcher.checks.memory_estimate``).

Cheap: a text SFT dry run of a random-init model imports neither torch nor transformers; the LoRA target
check (a list of targets) and the memory check (GPUs) import them when they run.
"""
from __future__ import annotations

from launcher.checks.config import check_batch, check_config
from launcher.checks.data import check_data_choices, check_datasets
from launcher.checks.generation import check_generation_engine
from launcher.checks.memory import check_memory
from launcher.checks.model import (check_dtype, check_freeze_modules, check_hub_model, check_lora_targets,
                                   check_model, check_reward_model, check_sequence_parallel_heads, check_tokenizer,
                                   check_weights)
from launcher.checks.problems import Problems
from launcher.checks.resources import (check_cluster, check_local_resources, check_output_root, check_packages,
                                       check_optimizer_device, check_qlora, check_resume, check_slurm_resources)
from launcher.config.schema import Config
from launcher.errors import PreflightError

CHECKS = (check_config, check_cluster, check_local_resources, check_slurm_resources, check_packages, check_qlora,
          check_optimizer_device, check_batch, check_generation_engine,
          check_datasets, check_data_choices, check_model, check_reward_model, check_hub_model, check_weights, check_tokenizer,
          check_lora_targets, check_freeze_modules, check_sequence_parallel_heads, check_dtype, check_resume, check_output_root,
          check_memory)
"""In this order: the config first (a later check may assume its values in range; ``Problems.check`` keeps a
broken value's follow-up error from hiding the line that matters)."""


def run_preflight(cfg: Config) -> list:
    """Run every check; return warnings, or raise PreflightError listing every problem found."""
    problems = Problems()
    for check in CHECKS:
        problems.check(check, cfg)
    if len(problems.errors) == 1:
        raise PreflightError(f"preflight refused the run: {problems.errors[0]}")
    if problems.errors:
        lines = "\n".join(f"  - {e}" for e in problems.errors)
        raise PreflightError(f"preflight refused the run ({len(problems.errors)} problems):\n{lines}")
    return problems.warnings
