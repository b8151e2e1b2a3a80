"""Supervised fine-tuning, full or LoRA: ``python -m recipes.sft --run-dir RUN_DIR`` on every rank.

Supports: chat-template tokenization with assistant-only labels (launcher.data), optional packing without
cross-contamination; the loss only at trained positions, in chunks, normalized by the trained tokens of the
whole optimizer step across micro-batches and ranks (launcher.training.objectives.sft); gradient
accumulation; warmup + cosine/linear/constant schedule; gradient checkpointing; DDP, DeepSpeed ZeRO and FSDP2
(launcher.engines); eval loss every N steps; held-out exact match before and after; atomic checkpoints with
exact resume and a clean stop on preemption; metrics.jsonl, a progress bar, W&B on rank 0, a loss plot; the
final model in HF format (or a PEFT adapter, with the random-init base beside it when there is no hub base).

Raises ConfigError / DataError (one line, naming the key or row) before any training starts: a tokenizer
without a chat template and no data.template, malformed rows, fewer rows than one global batch, a checkpoint
to resume that is incomplete or of another world size or parallelism.
"""
from __future__ import annotations

import sys

from launcher.data import build_supervised_datasets
from launcher.training.entry import recipe_main
from launcher.training.objectives.sft import CausalLMObjective
from launcher.training.recipe import Recipe


class SFTRecipe(Recipe):
    def setup(self) -> None:
        cfg = self.cfg
        self.start_setup()  # seed, tokenizer, precision, attention

        self.data = self.load_data()
        self.meter.phase("data")
        self.log_data(self.data)

        model = self.build_policy()  # logged, and the steps planned from the training rows

        objective = CausalLMObjective(self.data, cfg, sequence_parallel=self.sequence_parallel)
        engine = self.build_engine(model, objective)
        self.make_trainer(engine, self.data, objective)

    def load_data(self):
        """SFT's rows (KTO feedback data is refused: its undesirable answers would be learned as good)."""
        return build_supervised_datasets(self.cfg, self.tokenizer, attn_implementation=self.attn_impl)


RECIPE = SFTRecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
