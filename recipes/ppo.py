"""PPO with a reward model (LLaMA-Factory's ``stage: ppo``), full or LoRA: ``python -m recipes.ppo --run-dir RUN_DIR``.

Supports: prompts from instruction data (alpaca/sharegpt; launcher.data.prompt_rows, as GRPO); per step, one
completion per prompt sampled from the policy with a KV cache (launcher.inference.rollout, GRPO's generation
path; the policy gathered for the rollout under ZeRO-3/FSDP); the score of prompt + completion by the saved
model of a method=rm run (``method.ppo.reward_model=RUN_DIR``); per-token rewards with a KL penalty to the
reference (``kl_coef`` > 0: a frozen copy for full fine-tuning, the base with adapters off for LoRA); a value head
on the policy's backbone (launcher.training.objectives.ppo says why there); GAE, whitened advantages, the clipped
policy and value losses (launcher.training.ppo_loss, TRL's formulas); ``ppo_epochs`` optimizer steps per
generation batch. Metrics per step in metrics.jsonl: reward (the reward model's score) mean/std, KL to the
reference, non-score and RLHF reward, entropy, policy and value loss, their clip fractions, approximate KL to the
sampling policy, value and return means, advantage std, completion length, the time split between generation,
scoring and update; before and after training (and every train.eval_every steps) the held-out score of greedy
completions (``eval/reward``; ``eval/exact_match`` where the data has answers). The loop, schedule, checkpoints
with exact resume (the current generation batch's rows included) and the final save (the policy alone, a plain
causal LM or LoRA adapter) are the Trainer's.

Raises ConfigError before training when method.ppo.reward_model is missing or not a finished method=rm run;
DataError when the data is not instruction data.
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
from launcher.training.objectives.grpo import completion_reference, generation_weights
from launcher.training.objectives.ppo import PPOObjective, attach_value_head, load_reward_model, zero_value_head
from launcher.training.objectives.reference import frozen_copy
from launcher.training.recipe import Recipe

log = logging.getLogger("launcher.ppo")


class PPORecipe(Recipe):
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        p = cfg.method.ppo
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = build_prompt_datasets(cfg, self.tokenizer)
        self.meter.phase("data")
        self.log_data(self.data)
        reward_model = load_reward_model(cfg, dist.device)

        model = self.build_policy()  # logged, and the steps planned from the prompts (plan_steps below)
        ref_model = None
        if p.kl_coef > 0 and cfg.method.finetuning == "full":
            ref_model = frozen_copy(model, dist.device, cfg, self.tokenizer, self.attn_impl,
                                    self.precision.param_dtype)  # before the engine wraps (or shards) the policy
        attach_value_head(model)

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.eos_token_id
        objective = PPOObjective(self.data, cfg, self.tokenizer, reward_model, pad_id)
        engine = self.build_engine(model, objective)
        zero_value_head(engine, engine.model)
        objective.scorer = unwrap_loss_module(engine.module)
        objective.collective = engine.forward_is_collective
        objective.reference = self.reference_scorer(objective.scorer, ref_model)
        objective.generation = rollout_engine(  # generation.engine: transformers or vllm (the value head stays here)
            cfg, engine.model, pad_id, eos_ids(engine.model, self.tokenizer), dist.device,
            cfg.data.cutoff_len + p.max_completion_length, weights=generation_weights(engine),
            collective=engine.forward_is_collective, autocast=self.precision.autocast, rank=dist.rank)
        self.make_trainer(engine, self.data, objective)  # resumes: the value head from the checkpoint too
        if dist.is_main:
            log.info("ppo: %d prompts per micro-batch, completions up to %d tokens, reward model %s, kl_coef %g"
                     " (reference: %s), cliprange %g, cliprange_value %g, vf_coef %g, gamma %g, lam %g, %d optimizer"
                     " step(s) per generation batch", cfg.train.micro_batch_size, p.max_completion_length,
                     reward_model.name[3:], p.kl_coef,
                     "none" if p.kl_coef == 0 else "frozen copy" if ref_model is not None else "adapters off",
                     p.cliprange, p.cliprange_value, p.vf_coef, p.gamma, p.lam, p.ppo_epochs)

    def plan_steps(self, n_rows: int) -> None:
        """As every recipe, over prompts; each generation batch then trains ppo_epochs optimizer steps."""
        super().plan_steps(n_rows)
        if self.cfg.train.max_steps <= 0:
            epochs = self.cfg.method.ppo.ppo_epochs
            self.total_steps = max(1, int(math.ceil(self.cfg.train.epochs * self.steps_per_epoch))) * epochs

    def reference_scorer(self, scorer, ref_model):
        """batch -> the reference's per-token log-probs (kl_coef > 0), or None."""
        if self.cfg.method.ppo.kl_coef == 0:
            return None
        return completion_reference(scorer, ref_model, temperature=self.cfg.method.ppo.temperature)


RECIPE = PPORecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
