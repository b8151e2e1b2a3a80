"""KTO on thumbs-up/down feedback, full or LoRA: ``python -m recipes.kto --run-dir RUN_DIR``.

Supports: LLaMA-Factory's feedback data (a ``kto_tag`` column, alpaca or sharegpt: kto_en_demo), desirable and
undesirable weights, the KL reference point from mismatched prompt/answer pairs made within each micro-batch as
TRL 1.16 makes them (launcher.training.objectives.kto); the reference as for DPO
(launcher.training.objectives.reference): the base with LoRA adapters disabled (no second copy), or a frozen
copy for full fine-tuning (also under ZeRO-3/FSDP, where it is unsharded on every rank: use kto_lora when the
model is big). Metrics per step: rewards/chosen (desirable), rewards/rejected (undesirable), rewards/margin,
logps/chosen, logps/rejected, kl; before and after training (and every train.eval_every steps) the same on the
held-out rows (``eval/...``) and the first ``method.kto.probe_rows`` training rows (``train_rows/...``). The
loop, schedule, checkpoints with exact resume and the final save are the Trainer's.

Raises DataError before training when the data has no kto_tag column (or a kto_tag that is not true/false),
ConfigError when a micro-batch has fewer than 2 rows (no other answer to pair a prompt with).
"""
from __future__ import annotations

import logging
import sys

from launcher.data import build_feedback_datasets
from launcher.training.entry import recipe_main
from launcher.training.objectives import unwrap_loss_module
from launcher.training.objectives.kto import KTOObjective
from launcher.training.objectives.reference import describe_reference, frozen_copy, reference_scorer
from launcher.training.recipe import Recipe

log = logging.getLogger("launcher.kto")


class KTORecipe(Recipe):
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = build_feedback_datasets(cfg, self.tokenizer, attn_implementation=self.attn_impl)
        self.meter.phase("data")
        self.log_data(self.data)

        model = self.build_policy()  # logged, and the steps planned from the training rows

        objective = KTOObjective(self.data, cfg)
        # LoRA: the policy with its adapters off is the reference; full: a frozen copy of the starting weights.
        self.ref_model = frozen_copy(model, dist.device, cfg, self.tokenizer, self.attn_impl,
                                    self.precision.param_dtype) if cfg.method.finetuning != "lora" else None
        engine = self.build_engine(model, objective)
        objective.scorer = unwrap_loss_module(engine.module)
        objective.reference = reference_scorer(cfg, objective.scorer, self.ref_model)
        self.make_trainer(engine, self.data, objective)
        if dist.is_main:
            k = cfg.method.kto
            good = int(self.data.train.column("kto_tag").sum())
            log.info("kto: beta %g, weights desirable %g / undesirable %g, %d desirable and %d undesirable rows,"
                     " reference: %s", k.beta, k.desirable_weight, k.undesirable_weight, good,
                     len(self.data.train) - good, describe_reference(cfg, self.ref_model, precomputed=False))


RECIPE = KTORecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
