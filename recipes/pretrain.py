"""Continued pretraining on plain text, full, LoRA or freeze: ``python -m recipes.pretrain --run-dir RUN_DIR``.

Supports: text datasets (a ``text`` column in .jsonl/.json/.csv/parquet, or .txt with one document a line:
LLaMA-Factory's c4_demo and wiki_demo), every token trained; each document ends with the tokenizer's
end-of-text (eos) token, documents longer than data.cutoff_len are cut into pieces of cutoff_len
(launcher.data.tokenize.encode_text), and pieces are packed into rows of cutoff_len where each attends only to
itself (launcher.data.packing; block-diagonal masks, or flash-attention's varlen path), so no document sees
another. The loss, loop, schedule, checkpoints and save are SFT's (launcher.training.objectives.sft); only the
data differs.

Raises DataError before training when a dataset is not plain text, ConfigError when data.packing is off.
"""
from __future__ import annotations

import sys

from launcher.data import build_text_datasets
from launcher.training.entry import recipe_main
from recipes.sft import SFTRecipe


class PretrainRecipe(SFTRecipe):
    def load_data(self):
        return build_text_datasets(self.cfg, self.tokenizer, attn_implementation=self.attn_impl)


RECIPE = PretrainRecipe

if __name__ == "__main__":
    sys.exit(recipe_main(RECIPE))
