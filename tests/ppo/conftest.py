"""A task where the reward model is right, built from the task's own data: prompts whose answer is a string of
digits, and a reward model (method=rm, tiny) trained on pairs of the same prompts where the chosen answer is
digits and the rejected one vowels; its held-out pair accuracy is checked before PPO uses it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.dpo.conftest import _drop_log_handlers  # noqa: F401  (an autouse fixture: importing registers it)
from tests.rm.helpers import SMALL_MODEL, letters_data, run_rm, write_letter_pairs

RM_STEPS = 6


def write_digit_prompts(folder: Path, n_train: int = 32, n_eval: int = 8, seed: int = 1) -> None:
    """Instruction rows (alpaca) with the reward model's prompts: 'Answer.' and a short word; the answer column
    holds digits (what the reward model prefers), kept for the held-out exact-match count."""
    rng = random.Random(seed)
    info = json.loads((folder / "dataset_info.json").read_text())
    for split, n in (("train", n_train), ("eval", n_eval)):
        rows = [{"instruction": "Answer.",
                 "input": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 6))),
                 "output": "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 6)))} for _ in range(n)]
        (folder / f"digits_{split}.json").write_text(json.dumps(rows, indent=0))
        info[f"digits_{split}"] = {"file_name": f"digits_{split}.json",
                                   "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1))


@pytest.fixture(scope="session")
def digits_task(tmp_path_factory):
    """(dataset folder, the reward model's run dir, its summary)."""
    root = tmp_path_factory.mktemp("ppo_task")
    folder = write_letter_pairs(root / "data")
    write_digit_prompts(folder)
    _, run_dir, summary = run_rm(root / "runs", [*letters_data(folder), "method=rm", "method.lr=1e-2",
                                                 f"train.max_steps={RM_STEPS}", "train.save_model=true"], "rm")
    return folder, run_dir, summary


def ppo_data(folder: Path) -> list:
    return [f"data.dataset_dir={folder}", "data.datasets=[digits_train]", "data.eval_datasets=[digits_eval]",
            "data.cutoff_len=64", "data.packing=false", "data.template=null", "data.use_cache=false",
            "train.exact_match_samples=0", *SMALL_MODEL]
