"""method=ppo's configuration: the reward model checked at the dry run (missing, not a run, not a method=rm run,
unfinished), other impossible configs refused; LLaMA-Factory's stage: ppo translated (reward_model and its
type, ppo_*, the sampling keys), what is not built refused in a line naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from launcher.checks.preflight import run_preflight
from launcher.config.compose import compose_config
from launcher.config.llamafactory import translate
from launcher.errors import ConfigError, PreflightError
from launcher.launch.rundir import make_run_dir, write_run_config


def fake_run(root: Path, method: str, finished: bool = True) -> Path:
    """A run dir as a run of ``method`` leaves it (config.yaml; model/ once finished), without training."""
    run_dir = make_run_dir(root, method)
    write_run_config(run_dir, compose_config([f"run.output_root={root}", f"method={method}"]))
    if finished:
        (run_dir / "model").mkdir()
    return run_dir


def test_a_good_ppo_config_passes_the_preflight(tmp_path):
    rm = fake_run(tmp_path, "rm")
    cfg = compose_config(["method=ppo_lora", f"method.ppo.reward_model={rm}"])
    assert cfg.method.finetuning == "lora" and cfg.method.ppo.ppo_epochs == 4
    run_preflight(cfg)
    run_preflight(compose_config(["method=ppo", f"method.ppo.reward_model={rm / 'model'}"]))  # its model/ too


@pytest.mark.parametrize("reward_model,match", [
    (None, "method.ppo.reward_model: required: the run dir of a finished method=rm run"),
    ("/no/such/run", "method.ppo.reward_model: /no/such/run does not exist"),
    ("{tmp}", "is not a run dir \\(no config.yaml\\)"),
    ("{sft}", "is a method=sft_full run, not a reward model; train one with method=rm"),
    ("{unfinished}", "holds no model/ \\(the method=rm run has not finished\\)"),
])
def test_the_reward_model_is_checked_at_the_dry_run(tmp_path, reward_model, match):
    runs = {"tmp": tmp_path, "sft": fake_run(tmp_path, "sft_full"), "unfinished": fake_run(tmp_path, "rm", False)}
    given = [] if reward_model is None else [f"method.ppo.reward_model={reward_model.format(**runs)}"]
    with pytest.raises(PreflightError, match=match):
        run_preflight(compose_config(["method=ppo", *given]))


def test_impossible_ppo_configs_are_refused(tmp_path):
    rm = fake_run(tmp_path, "rm")
    with pytest.raises(ConfigError, match="data.packing: method=ppo trains on its own completions"):
        compose_config(["method=ppo", "data.packing=true"])
    with pytest.raises(ConfigError, match="method.ppo.cliprange"):
        compose_config(["method=ppo", "method.ppo.cliprange=0"])
    with pytest.raises(ConfigError, match="method.finetuning: method=ppo needs method.finetuning=full|lora"):
        compose_config(["method=ppo", "method.finetuning=freeze"])
    with pytest.raises(PreflightError, match="method=ppo samples answers to prompts .* 'prefs'"):
        run_preflight(compose_config(["method=ppo", "data=prefs", f"method.ppo.reward_model={rm}"]))


# ------------------------------------------------------------------------------------------ LLaMA-Factory

LF_PPO = {"model_name_or_path": "/m", "stage": "ppo", "do_train": True, "finetuning_type": "lora",
          "dataset": "alpaca_en_demo", "template": "qwen"}


def test_llamafactory_stage_ppo_translates(tmp_path):
    rm = fake_run(tmp_path, "rm")
    t = translate({**LF_PPO, "reward_model": str(rm), "ppo_epochs": 2, "ppo_whiten_rewards": True,
                   "ppo_target": 6.0, "max_new_tokens": 32, "temperature": 0.7}, cwd=tmp_path)
    o = t.overrides
    assert "method=ppo_lora" in o and f"method.ppo.reward_model={rm}" in o
    assert {"method.ppo.ppo_epochs=2", "method.ppo.whiten_rewards=true", "method.ppo.max_completion_length=32",
            "method.ppo.temperature=0.7", "method.ppo.top_p=0.7"} <= set(o)  # top_p: LF's default
    assert any("reward_model_type: lora" in n for n in t.notes) and any("ppo_target" in n for n in t.notes)
    assert any("top_p: LLaMA-Factory's defaults" in n or "top_p 0.7" in n for n in t.notes)
    # full, with the output_dir a launcher rm run linked its final model into (LF's reward_model)
    out = tmp_path / "saves" / "rm"
    out.mkdir(parents=True)
    (rm / "model" / "model.safetensors").write_bytes(b"")
    (out / "model.safetensors").symlink_to(rm / "model" / "model.safetensors")
    t = translate({**LF_PPO, "finetuning_type": "full", "reward_model": "saves/rm", "reward_model_type": "full"},
                  cwd=tmp_path)
    assert "method=ppo" in t.overrides and f"method.ppo.reward_model={rm}" in t.overrides


@pytest.mark.parametrize("extra,key,words", [
    ({}, "reward_model", "required with stage: ppo"),
    ({"reward_model": "saves/none"}, "reward_model", "neither the output_dir of a stage: rm run"),
    ({"reward_model": "{rm}", "reward_model_type": "api"}, "reward_model_type", "not supported: a reward served"
                                                                                " over HTTP"),
    ({"reward_model": "{rm}", "finetuning_type": "full"}, "reward_model_type", "lora needs finetuning_type: lora"),
    ({"reward_model": "{rm}", "ppo_buffer_size": 2}, "ppo_buffer_size", "not supported yet"),
    ({"reward_model": "{rm}", "ppo_score_norm": True}, "ppo_score_norm", "not supported yet"),
    ({"reward_model": "{rm}", "reward_model_adapters": "a"}, "reward_model_adapters", "not supported yet"),
])
def test_llamafactory_ppo_keys_not_built_are_refused_in_a_line_naming_them(tmp_path, extra, key, words):
    rm = fake_run(tmp_path, "rm")
    lf = {**LF_PPO, **{k: v.format(rm=rm) if isinstance(v, str) else v for k, v in extra.items()}}
    with pytest.raises(ConfigError) as err:
        translate(lf, cwd=tmp_path)
    line = [x for x in str(err.value).splitlines() if f"{key}: " in x]
    assert line and words in line[0], str(err.value)


def test_ppo_keys_under_another_stage_are_noted_unused(tmp_path):
    t = translate({**LF_PPO, "stage": "sft", "reward_model": "x", "ppo_epochs": 2}, cwd=tmp_path)
    assert any("reward_model, ppo_epochs: unused with stage sft" in n for n in t.notes)
