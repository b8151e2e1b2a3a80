"""GRPO (Group Relative Policy Optimization), full or LoRA: ``python -m recipes.grpo --run-dir RUN_DIR``.

Supports: prompts from instruction data (alpaca/sharegpt; the answer column kept for the rewards:
launcher.data.prompt_rows); per step, G = ``method.grpo.num_generations`` completions per prompt sampled from
the policy with a KV cache (launcher.inference.rollout, the policy gathered for the rollout under ZeRO-3/FSDP);
reward functions with weights (``method.grpo.rewards``: exact_match, format, length, ``module:function``,
``rm:RUN_DIR``; launcher.training.rewards); group-normalised advantages; the clipped policy ratio with low/high
epsilon; an optional KL penalty to the reference (``beta`` > 0: a frozen copy for full fine-tuning, the base with
adapters off for LoRA); TRL's loss normalisations grpo, dr_grpo, dapo, bnpo; ``num_iterations`` optimizer steps
per generation batch (launcher.training.objectives.grpo). Metrics per step in metrics.jsonl: reward mean/std (in
all and per function), KL, entropy, completion length, clip ratio, advantage std, the time split between
generation, scoring and update; before and after training (and every train.eval_every steps) the held-out
reward of greedy completions (``eval/...``, method.grpo.eval_prompts prompts) and the Trainer's held-out exact
match (train.exact_match_samples). The loop, schedule, checkpoints with exact resume (the current completions
included) and the final save are the Trainer's.

Raises ConfigError before training for G < 2, no reward, unknown reward names or an unimportable
``module:function``; DataError when the data is not instruction data; RewardError when a reward function raises
on a row (with ``method.grpo.reward_errors=raise``, the default), naming the function and the row.
"""
from __future__ import annotations

import logging
import math
import sys

from launcher.data.prompt_rows import build_prompt_datasets
from launcher.inference.generation import eos_ids
from launcher.inference.rollout_engines import rollout_engine
from launcher.training.entry import recipe_main
from launcher.training.objectives import unwrap_loss_module
from launcher.training.objectives.grpo import GRPOObjective, completion_reference, generation_weights, sharded_forward
from launcher.training.objectives.reference import frozen_copy
from launcher.training.recipe import Recipe
from launcher.training.rewards import build_reward_functions

log = logging.getLogger("launcher.grpo")


class GRPORecipe(Recipe):
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        g = cfg.method.grpo
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = build_prompt_datasets(cfg, self.tokenizer)
        self.meter.phase("data")
        self.log_data(self.data)
        functions = build_reward_functions(cfg, self.tokenizer, dist.device)

        model = self.build_policy()  # logged, and the steps planned from the prompts (plan_steps below)
        ref_model = None
        if g.beta > 0 and cfg.method.finetuning == "full":
            ref_model = frozen_copy(model, dist.device, cfg, self.tokenizer, self.attn_impl,
                                    self.precision.param_dtype)  # before the engine wraps (or shards) the policy

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.eos_token_id
        objective = GRPOObjective(self.data, cfg, self.tokenizer, functions, pad_id)
        engine = self.build_engine(model, objective)
        objective.scorer = unwrap_loss_module(engine.module)
        objective.dist = dist
        objective.collective = engine.forward_is_collective
        objective.reference = self.reference_scorer(objective.scorer, ref_model)
        objective.generation = rollout_engine(  # generation.engine: transformers or vllm
            cfg, engine.model, pad_id, eos_ids(engine.model, self.tokenizer), dist.device,
            cfg.data.cutoff_len + g.max_completion_length, weights=generation_weights(engine),
            collective=engine.forward_is_collective, autocast=self.precision.autocast, rank=dist.rank)
        self.make_trainer(engine, self.data, objective)
        if dist.is_main:
            log.info("grpo: G=%d, %d prompts per micro-batch, completions up to %d tokens, rewards %s, loss %s,"
                     " epsilon [%g, %g], beta %g (reference: %s), %d optimizer step(s) per generation batch",
                     g.num_generations, cfg.train.micro_batch_size, g.max_completion_length,
                     ", ".join(f"{fn.name} x {w:g}" for fn, w in functions), g.loss_type, g.epsilon,
                     g.epsilon if g.epsilon_high is None else g.epsilon_high, g.beta,
                     "none" if g.beta == 0 else "frozen copy" if ref_model is not None else "adapters off",
                     g.num_iterations)

    def plan_steps(self, n_rows: int) -> None:
        """As every recipe, over prompts; each generation batch then trains num_iterations optimizer steps."""
        super().plan_steps(n_rows)
        if self.cfg.train.max_steps <= 0:
            mu = self.cfg.method.grpo.num_iterations
            self.total_steps = max(1, int(math.ceil(self.cfg.train.epochs * self.steps_per_epoch))) * mu

    def reference_scorer(self, scorer, ref_model):
        """batch -> the reference's per-token log-probs (beta > 0), or None."""
        if self.cfg.method.grpo.beta == 0:
            return None
        return completion_reference(scorer, ref_model, share_prompts=not sharded_forward(self.cfg),
                                    temperature=self.cfg.method.grpo.temperature)


RECIPE = GRPORecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
