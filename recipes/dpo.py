"""Preference optimization (DPO and friends), full or LoRA: ``python -m recipes.dpo --run-dir RUN_DIR``.

Supports: loss_type sigmoid (DPO, with label smoothing), ipo, hinge, and the reference-free simpo and orpo
(launcher.training.objectives.preference); the reference model is the base with LoRA adapters disabled (no
second copy), a frozen copy for full fine-tuning, or reference log-probs computed once before training
(``method.dpo.precompute_ref_log_probs``: no reference in memory while training). Metrics per step in
metrics.jsonl / W&B: rewards/chosen, rewards/rejected, rewards/accuracy, rewards/margin, logps/chosen,
logps/rejected (aggregated over micro-batches and ranks); before and after training (and every
train.eval_every steps) the same on the held-out pairs (``eval/...``) and on the first ``method.dpo.probe_pairs``
training pairs (``train_pairs/...``). The loop, schedule, checkpoints with exact resume and the final save are
the Trainer's, as for SFT.

Raises DataError before training when the data is not preference data (ranking: true), or when a pair's
chosen and rejected rows do not share the prompt and its masks.
"""
from __future__ import annotations

import logging
import sys

from launcher.data import build_preference_datasets
from launcher.training.entry import recipe_main
from launcher.training.objectives import unwrap_loss_module
from launcher.training.objectives.preference import PreferenceObjective, check_shared_prompts
from launcher.training.objectives.reference import (describe_reference, frozen_copy, precompute_reference_logps,
                                                    reference_scorer, sharded_parameters)
from launcher.training.recipe import Recipe

log = logging.getLogger("launcher.dpo")


class DPORecipe(Recipe):
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = build_preference_datasets(cfg, self.tokenizer, attn_implementation=self.attn_impl)
        check_shared_prompts(self.data)
        self.meter.phase("data")
        self.log_data(self.data)

        model = self.build_policy()  # logged, and the steps planned from the training rows

        objective = PreferenceObjective(self.data, cfg)
        d = cfg.method.dpo
        self.precompute = objective.uses_reference and (d.precompute_ref_log_probs or (
            cfg.method.finetuning == "full" and sharded_parameters(cfg)))
        if self.precompute and not d.precompute_ref_log_probs and dist.is_main:
            # A frozen copy per rank would be the whole unsharded model on every GPU, which is what
            # ZeRO-3/FSDP are there to avoid; the log-probs of the starting weights give the same loss.
            log.info("dpo: parallelism=%s shards the policy, so the reference's log-probs are precomputed once"
                     " (as method.dpo.precompute_ref_log_probs=true) instead of keeping an unsharded frozen copy"
                     " on every rank", cfg.parallelism.name)
        self.ref_model = None
        if objective.uses_reference and cfg.method.finetuning == "full" and not self.precompute:
            self.ref_model = frozen_copy(model, dist.device, cfg, self.tokenizer, self.attn_impl,
                                         self.precision.param_dtype)  # before the engine wraps (or shards) the policy
        engine = self.build_engine(model, objective)
        objective.scorer = unwrap_loss_module(engine.module)
        self.engine_forward_is_collective = engine.forward_is_collective
        objective.reference = reference_scorer(cfg, objective.scorer, self.ref_model)
        if self.precompute:
            # Before the Trainer resumes trained weights: the policy is still the reference here.
            self.precompute_reference(objective)
        self.make_trainer(engine, self.data, objective)
        if dist.is_main:
            reference = describe_reference(cfg, self.ref_model, self.precompute, objective.uses_reference)
            log.info("dpo: loss %s, beta %g, label smoothing %g, reference: %s", d.loss_type, d.beta,
                     d.label_smoothing, reference)

    def precompute_reference(self, objective: PreferenceObjective) -> None:
        """Score every training and held-out pair with the reference once; the rows keep ``ref_logps``."""
        self.data.train = list(self.data.train)  # the store's rows are made on access: keep them as a list
        if self.data.eval is not None:
            self.data.eval = list(self.data.eval)
        for rows in (self.data.train, self.data.eval or []):
            precompute_reference_logps(rows, self.data.collate, objective.reference, objective.scorer, self.dist,
                                       self.cfg.train.micro_batch_size, self.engine_forward_is_collective, width=2)
        if self.dist.is_main:
            log.info("reference log-probs precomputed for %d training pairs", len(self.data.train))


RECIPE = DPORecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
