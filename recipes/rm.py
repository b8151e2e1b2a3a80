"""Reward model (LLaMA-Factory's ``stage: rm``), full, LoRA or freeze: ``python -m recipes.rm --run-dir RUN_DIR``.

Supports: a scalar score head on the language model, trained on preference pairs (ranking: true, the data DPO
reads) with the pairwise loss -log sigmoid(r_chosen - r_rejected) (launcher.training.objectives.reward_model).
The model is built as transformers' ``AutoModelForSequenceClassification`` with num_labels=1 from the causal
LM's config and weights (launcher.models.reward; its ``score`` head new, the LM head dropped), so the saved
model dir loads with ``AutoModelForSequenceClassification.from_pretrained`` (LoRA: that plus
``PeftModel.from_pretrained``; the adapter carries the trained score head) and scores each row at its last
non-pad token as in training. Freeze tuning trains the chosen layers and the score head. Every parallelism
builds it (ddp, zero2, zero3, fsdp). Metrics per step: loss, rewards/chosen, rewards/rejected (the scores),
rewards/accuracy (pairs scored right), rewards/margin; before and after training (and every
train.eval_every steps) the same on the held-out pairs (``eval/...``) and the first ``method.rm.probe_pairs``
training pairs (``train_pairs/...``). The loop, schedule, checkpoints with exact resume and the final save are
the Trainer's.

Raises ConfigError before training for a QLoRA base (method.lora.quantize) or a vision-language model, and
DataError when the data is not preference data (ranking: true) or a pair's chosen and rejected rows do not
share the prompt.
"""
from __future__ import annotations

import logging
import sys

from launcher.data import build_preference_datasets
from launcher.training.entry import recipe_main
from launcher.training.objectives import unwrap_loss_module
from launcher.training.objectives.preference import check_shared_prompts
from launcher.training.objectives.reward_model import RewardModelObjective
from launcher.training.recipe import Recipe

log = logging.getLogger("launcher.rm")


class RewardModelRecipe(Recipe):
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = build_preference_datasets(cfg, self.tokenizer, attn_implementation=self.attn_impl)
        check_shared_prompts(self.data)
        # A reward model scores; it does not answer (train.exact_match_samples has nothing to generate with).
        self.data.eval_samples = None
        self.meter.phase("data")
        self.log_data(self.data)

        # AutoModelForSequenceClassification, num_labels=1 (launcher.models.reward), built for method=rm
        model = self.build_policy(prepare=self.train_new_head)

        objective = RewardModelObjective(self.data, cfg)
        engine = self.build_engine(model, objective)
        objective.scorer = unwrap_loss_module(engine.module)
        self.make_trainer(engine, self.data, objective)
        if dist.is_main:
            log.info("rm: pairwise loss on %d training pairs, %s, score at the last non-pad token (pad id %s)",
                     len(self.data.train), cfg.method.finetuning, self.tokenizer.pad_token_id)


    def train_new_head(self, model) -> None:
        """Freeze tuning: the new score head has to learn whatever the chosen layers do (LoRA: peft trains it as
        modules_to_save)."""
        if self.cfg.method.finetuning == "freeze":
            model.score.requires_grad_(True)


RECIPE = RewardModelRecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
