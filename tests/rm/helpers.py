"""Running the reward-model recipe in-process on a small model, on pairs the test writes itself."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from recipes.rm import RewardModelRecipe
from tests.recipe_runs import run_recipe

# A smaller tiny model than the default (2 cores shared with others): 2 layers, hidden 64.
SMALL_MODEL = ["model.config.hidden_size=64", "model.config.intermediate_size=192", "model.config.num_hidden_layers=2"]


def write_letter_pairs(folder: Path, n_train: int = 24, n_eval: int = 16, seed: int = 0) -> Path:
    """A ranking dataset with a learnable rule: the chosen answer is digits, the rejected one vowels (random
    lengths, random prompts; small alphabets, so the training pairs show every character), so a reward model
    that learns the rule ranks held-out pairs right too. This way round the seeded random-init tiny model
    ranks most held-out pairs wrong (the other way round it happens to rank them right before training)."""
    rng = random.Random(seed)
    letters, digits = "aeiou", "0123456789"

    def pair() -> dict:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 6)))
        return {"instruction": "Answer.", "input": word[::-1],
                "chosen": "".join(rng.choice(digits) for _ in range(rng.randint(2, 6))),
                "rejected": "".join(rng.choice(letters) for _ in range(rng.randint(2, 6)))}

    folder.mkdir(parents=True, exist_ok=True)
    columns = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
    info = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        (folder / f"letters_{split}.json").write_text(json.dumps([pair() for _ in range(n)], indent=0))
        info[f"letters_{split}"] = {"file_name": f"letters_{split}.json", "ranking": True, "columns": columns}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return folder


def letters_data(folder: Path) -> list[str]:
    return [f"data.dataset_dir={folder}", "data.datasets=[letters_train]", "data.eval_datasets=[letters_eval]",
            "data.cutoff_len=64", "data.packing=false", "data.template=null", "data.use_cache=false"]


FAST = ["method.rm.probe_pairs=8", "train.micro_batch_size=8", "train.grad_accum=1", "train.log_every=1",
        "train.eval_every=0", "train.warmup_ratio=0", "train.lr_scheduler=constant", *SMALL_MODEL]


def run_rm(output_root: Path, overrides: list[str], name: str = "t"):
    return run_recipe(RewardModelRecipe, output_root, [*FAST, *overrides], name)


@torch.no_grad()
def reloaded_scores(run_dir: Path, rows: list, collate) -> torch.Tensor:
    """(chosen, rejected) scores [len(rows), 2] of ``rows`` by the saved model, reloaded the standard way:
    ``AutoModelForSequenceClassification`` (plus ``PeftModel`` on the base saved beside a LoRA adapter)."""
    from transformers import AutoModelForSequenceClassification

    model_dir = Path(run_dir) / "model"
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        base = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    batch = collate(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (2 * len(rows), 1)
    return logits[:, 0].float().view(2, -1).T
