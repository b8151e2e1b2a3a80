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

import copy
import logging
import sys

import torch

from launcher.data import build_preference_datasets
from launcher.engines.base import build_engine, build_model
from launcher.engines.distributed import all_reduce_sum
from launcher.paths import BASE_MODEL_DIR
from launcher.training.batching import eval_batches
from launcher.training.entry import recipe_main
from launcher.training.objectives import to_device, unwrap_loss_module
from launcher.training.objectives.preference import PreferenceObjective, SequenceLogProbs, check_shared_prompt
from launcher.training.recipe import Recipe

log = logging.getLogger("launcher.dpo")


class DPORecipe(Recipe):
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = build_preference_datasets(cfg, self.tokenizer, attn_implementation=self.attn_impl)
        for split, rows in (("train", self.data.train), ("eval", self.data.eval or [])):
            for i, row in enumerate(rows):
                check_shared_prompt(row, f"{split} pair {i}")
        self.meter.phase("data")
        self.log_data(self.data)

        model = build_model(cfg, self.tokenizer, dist, self.attn_impl, self.precision,
                            save_base_to=self.run_dir / BASE_MODEL_DIR if cfg.train.save_model or cfg.train.save_every
                            else None)
        self.meter.phase("model")
        self.log_model(model)
        self.plan_steps(len(self.data.train))

        objective = PreferenceObjective(self.data, cfg)
        d = cfg.method.dpo
        self.ref_model = None
        if objective.uses_reference and cfg.method.finetuning == "full" and not d.precompute_ref_log_probs:
            # A frozen copy of the starting weights; taken before the engine wraps (or shards) the policy.
            self.ref_model = copy.deepcopy(model).to(dist.device).eval().requires_grad_(False)
        engine = build_engine(cfg, model, dist, self.total_steps, loss_module=objective.loss_module,
                              precision=self.precision)
        objective.scorer = unwrap_loss_module(engine.module)
        objective.reference = self.reference_scorer(objective, self.ref_model)
        if objective.uses_reference and d.precompute_ref_log_probs:
            # Before the Trainer resumes trained weights: the policy is still the reference here.
            self.precompute_reference(objective)
        self.make_trainer(engine, self.data, objective)
        if dist.is_main:
            if not objective.uses_reference:
                reference = "none (reference-free)"
            elif d.precompute_ref_log_probs:
                reference = "log-probs precomputed once"
            elif cfg.method.finetuning == "lora":
                reference = "base with adapters disabled"
            else:
                reference = "frozen copy"
            log.info("dpo: loss %s, beta %g, label smoothing %g, reference: %s", d.loss_type, d.beta,
                     d.label_smoothing, reference)

    def reference_scorer(self, objective: PreferenceObjective, ref_model):
        """batch -> the reference's sequence log-probs."""
        if ref_model is not None:
            ref_scorer = SequenceLogProbs(ref_model, self.cfg.train.loss_chunk_size)
            return torch.no_grad()(lambda batch: ref_scorer(**batch)[0])
        scorer = objective.scorer

        @torch.no_grad()
        def policy_as_reference(batch):
            if self.cfg.method.finetuning == "lora":
                # The base model is the reference; the adapters are switched off for this forward only.
                with scorer.model.disable_adapter():
                    return scorer(**batch)[0]
            # Full fine-tuning without a copy: only while precomputing, before the policy has moved.
            return scorer(**batch)[0]

        return policy_as_reference

    @torch.no_grad()
    def precompute_reference(self, objective: PreferenceObjective) -> None:
        """Score every training and held-out pair with the reference once; the rows keep ``ref_logps``."""
        objective.scorer.eval()
        for rows in (self.data.train, self.data.eval or []):
            values = torch.zeros(len(rows), 2, dtype=torch.float64, device=self.dist.device)
            for idx in eval_batches(len(rows), self.dist.rank, self.dist.world_size, self.cfg.train.micro_batch_size):
                batch = to_device(self.data.collate([rows[i] for i in idx]), self.dist.device)
                ref = objective.reference(batch).double()
                values[idx, 0], values[idx, 1] = ref[: len(idx)], ref[len(idx):]
            all_reduce_sum(values)  # each rank filled its share
            for row, (c, r) in zip(rows, values.tolist()):
                row["ref_logps"] = (c, r)
        objective.scorer.train()
        if self.dist.is_main:
            log.info("reference log-probs precomputed for %d training pairs", len(self.data.train))


RECIPE = DPORecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
