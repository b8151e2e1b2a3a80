"""GRPO's rewards in real runs: a reward model trained here (method=rm on pairs whose chosen answers are digits)
scores the completions as ``rm:RUN_DIR``, beside a ``module:function`` reward that raises on some rows and, with
``method.grpo.reward_errors=zero``, scores 0 there and is counted; with the default (raise) the same function
stops the run in one line that names the function and the row."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.metrics import read_metrics
from launcher.training.rewards import Completion, RewardModelReward
from recipes.grpo import GRPORecipe
from tests.recipe_runs import REPO_ROOT, run_recipe
from tests.rm.helpers import SMALL_MODEL, letters_data, run_rm, write_letter_pairs

RAISES = "tests.grpo.rewards_for_tests:raises_on_odd"
G = 3
GRPO = ["method=grpo", *SMALL_MODEL, "data.max_samples=8", "data.eval_datasets=[]", "train.micro_batch_size=4",
        "train.log_every=1", "train.warmup_ratio=0", "train.exact_match_samples=0", "train.max_steps=2",
        f"method.grpo.num_generations={G}", "method.grpo.max_completion_length=4", "method.grpo.eval_prompts=0",
        "train.save_model=false"]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    data = letters_data(write_letter_pairs(root / "letters"))
    _, run_dir, summary = run_rm(root, [*data, "method=rm", "method.lr=1e-2", "train.max_steps=6"])
    assert summary["rewards_after"]["eval/rewards/accuracy"] >= 0.9
    return run_dir


def test_a_reward_model_run_scores_grpo_completions_and_failing_rows_count(reward_model, output_root):
    rm = f"rm:{reward_model}"
    recipe, run_dir, summary = run_recipe(GRPORecipe, output_root, [
        *GRPO, f"method.grpo.rewards=[{rm},{RAISES}]", "method.grpo.reward_errors=zero"], "rm-reward")
    steps = read_metrics(run_dir, "train")
    assert len(steps) == 2
    for r in steps:
        assert math.isfinite(r[f"rewards/{rm}"]) and r[f"rewards/{rm}_std"] > 0
    # raises_on_odd fails on every completion of a prompt whose answer is "odd": each scores 0 and is counted
    odd = sum("odd" in row["row"]["output"] for row in recipe.data.train)
    assert odd > 0 and summary["reward_errors"] == {rm: 0, RAISES: odd * G}
    assert steps[-1][f"reward_errors/{RAISES}"] == odd * G

    # the reward model learned "digits are good": it scores a digit answer above a vowel answer to any prompt
    scorer = RewardModelReward(rm, torch.device("cpu"), recipe.tokenizer)
    row = recipe.data.train[0]
    digits, vowels = scorer.score([Completion(row, "4821", 5, False), Completion(row, "aeio", 5, False)])
    assert digits > vowels
    # a finished answer is scored with the template's end of answer, as the reward model was trained
    assert row["answer_suffix"] == "<|im_end|>\n"


def test_a_raising_reward_stops_the_run_naming_the_function_and_the_row(output_root):
    cfg = compose_config([f"run.output_root={output_root}", *GRPO, f"method.grpo.rewards=[exact_match,{RAISES}]"])
    run_dir = make_run_dir(output_root, "raises")
    write_run_config(run_dir, cfg)
    proc = subprocess.run([sys.executable, "-m", "recipes.grpo", "--run-dir", str(run_dir)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    # the progress bar's line is ended first: the error starts a line of its own in the log ("\n", not "\r",
    # which the bar uses to redraw)
    errors = [line for line in proc.stderr.split("\n") if "error: " in line]
    assert all(line.startswith("error: ") for line in errors), proc.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"reward {RAISES} raised ValueError: no odd rows here on row \S*tasks_train.json: row \d+",
                     errors[0]), errors[0]
    assert "method.grpo.reward_errors=zero" in errors[0]
    # it stopped in the first step's scoring: no step was logged, no model saved
    assert read_metrics(run_dir, "train") == [] and not (run_dir / "model").exists()
