"""Running the KTO recipe in-process on a small model, on feedback rows written from the shipped preference set."""
from __future__ import annotations

import json
from pathlib import Path

from launcher.paths import REPO_ROOT
from recipes.kto import KTORecipe
from tests.recipe_runs import run_recipe

SMALL_MODEL = ["model.config.hidden_size=64", "model.config.intermediate_size=192", "model.config.num_hidden_layers=2"]


def write_feedback_data(folder: Path, rows: int = 16) -> Path:
    """prefs_train.json's pairs as KTO rows in alpaca form: the chosen answer desirable, the rejected one not."""
    pairs = json.loads((REPO_ROOT / "data" / "prefs_train.json").read_text())[: rows // 2]
    # all desirable rows, then all undesirable ones: each row's KL partner (the previous row's answer) then
    # answers another prompt; interleaved, half the partners would be the same prompt's other answer
    feedback = [{"instruction": p["instruction"], "input": p["input"], "output": p["chosen"], "tag": True}
                for p in pairs]
    feedback += [{"instruction": p["instruction"], "input": p["input"], "output": p["rejected"], "tag": False}
                 for p in pairs]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feedback.json").write_text(json.dumps(feedback))
    (folder / "dataset_info.json").write_text(json.dumps({
        "feedback": {"file_name": "feedback.json", "columns": {"prompt": "instruction", "query": "input",
                                                               "response": "output", "kto_tag": "tag"}},
        "sft": {"file_name": "feedback.json"},
    }))
    return folder


def fast(dataset_dir: Path) -> list[str]:
    return [f"data.dataset_dir={dataset_dir}", "data.datasets=[feedback]", "data.eval_datasets=[feedback]",
            "data.use_cache=false", "method.kto.beta=0.5", "method.kto.probe_rows=16", "train.micro_batch_size=8", "train.grad_accum=1",
            "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0", "train.lr_scheduler=constant",
            "train.exact_match_samples=0", *SMALL_MODEL]


def run_kto(output_root: Path, overrides: list[str], name: str = "t"):
    return run_recipe(KTORecipe, output_root, overrides, name)
