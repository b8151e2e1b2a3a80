"""method=grpo's configuration: bad configs refused before any job queues (G < 2, no reward, unknown or
unimportable rewards, weights that do not match, data without answers)."""
from __future__ import annotations

import pytest

from launcher.checks.preflight import run_preflight
from launcher.config.compose import compose_config
from launcher.errors import ConfigError, PreflightError


@pytest.mark.parametrize("overrides,match", [
    (["method.grpo.num_generations=1"], r"method.grpo.num_generations: .*G >= 2"),
    (["method.grpo.rewards=[]"], "method.grpo.rewards: no reward function"),
    (["method.grpo.rewards=[exact_match,format]", "method.grpo.reward_weights=[1.0]"],
     "method.grpo.reward_weights: 1 weights for 2 rewards"),
    (["method.grpo.loss_type=ppo"], "method.grpo.loss_type: 'ppo' is not one of grpo, dr_grpo, dapo, bnpo"),
    (["data.packing=true"], "data.packing: method=grpo trains on its own completions"),
])
def test_impossible_grpo_configs_are_refused_when_composed(overrides, match):
    with pytest.raises(ConfigError, match=match):
        compose_config(["method=grpo", *overrides])


@pytest.mark.parametrize("overrides,match", [
    (["method.grpo.rewards=[exactmatch]"], "unknown reward 'exactmatch'"),
    (["method.grpo.rewards=[no_such_module_x:f]"], "cannot import module 'no_such_module_x'"),
    (["method.grpo.rewards=[tests.grpo.rewards_for_tests:nope]"], "'nope' in module 'tests.grpo.rewards_for_tests'"
                                                                 " is not a function"),
    (["method.grpo.rewards=[tests.grpo.rewards_for_tests:scores_text]"],
     r"reward 'tests.grpo.rewards_for_tests:scores_text' cannot be called as scores_text\(prompt=..., completion=...,"
     r" row=...\) \(missing a required argument: 'text'\); define it as def scores_text\(prompt: str"),
    (["method.grpo.rewards=[os:getcwd]"], r"cannot be called as getcwd\(prompt=..., completion=..., row=...\)"),
    (["method.grpo.rewards=[rm:/no/such/run]"], "holds no model/"),
    (["method.grpo.rewards=[format]", "method.grpo.format_pattern='[a'"], "format_pattern: '\\[a' is not a regular"),
    (["data=prefs"], "method=grpo samples answers to prompts, but 'prefs'.* with no answer column for the"
                     " exact_match reward"),
    (["model=tiny_qwen2_vl"], "model: method=grpo samples completions from text prompts only .* is a"
                              " vision-language model; use a text-only model"),
])
def test_rewards_and_data_are_checked_at_the_dry_run(overrides, match):
    with pytest.raises(PreflightError, match=match):
        run_preflight(compose_config(["method=grpo", *overrides]))


def test_a_good_grpo_config_passes_the_preflight():
    cfg = compose_config(["method=grpo_lora", "method.grpo.rewards=[exact_match,tests.grpo.rewards_for_tests:"
                          "first_char_is_digit]", "method.grpo.reward_weights=[1.0,0.5]"])
    assert cfg.method.finetuning == "lora" and cfg.method.grpo.num_generations == 4
    run_preflight(cfg)



@pytest.mark.parametrize("overrides,key", [
    (["method.grpo.num_generations=1"], "method.grpo.num_generations: must be >= 2"),
    (["method.grpo.rewards=[]"], "method.grpo.rewards: no reward function"),
    (["data=prefs", "method.grpo.rewards=[exact_match]"], "no answer column for the exact_match reward"),
    (["method.grpo.rewards=[no_such_module_x:score]"], "cannot import module 'no_such_module_x'"),
    (["method.grpo.rewards=[tests.grpo.rewards_for_tests:scores_text]"], "cannot be called as scores_text("),
])
def test_the_dry_run_refuses_bad_rl_config_in_one_line(overrides, key, tmp_path, capsys):
    from launcher.cli import main as cli_main

    out_root = tmp_path / "out"
    rc = cli_main(["train", "--dry-run", "method=grpo", "cluster=slurm_local", "cluster.nodes=2",
                   f"run.output_root={out_root}", *overrides])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("note:")]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert key in lines[0], lines[0]
    assert not any(out_root.rglob("*"))  # refused before a run dir is made or anything is queued
