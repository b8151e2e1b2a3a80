"""Saved arguments (the form to a YAML file that ``launcher train --args-file`` runs, and back), removing a
failed run, the Runs tab's rank health (``launcher status``'s reader), the GRPO fields and the reward curves:
without a browser (tests/ui/test_journey.py clicks through them)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from launcher.config.args_file import read_args_file, write_args_file
from launcher.errors import ConfigError
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.ui import form, plots, runs
from tests.ui.conftest import REPO_ROOT


def test_saved_arguments_give_the_cli_the_config_the_ui_previews(tmp_path):
    """The UI's Save writes the overrides Preview composes; ``launcher train --args-file F --dry-run`` resolves
    the same config, and the form it loads back composes the same overrides."""
    from launcher.ui import actions
    from launcher.ui.tabs.compose import compose_defaults

    groups = {**form.default_groups(), "method": "lora"}
    defaults = compose_defaults(groups)
    values = {**defaults, "method.lr": 1e-4, "train.max_steps": 3, "train.grad_accum": 2,
              "method.lora.plus_lr_ratio": "16", "method.lora.target_modules": "all"}
    free = "train.log_every=1 method.lora.dropout=0.1"
    overrides = form.form_overrides(groups, values, free, defaults, defaults_for=compose_defaults)
    overrides.append(f"run.output_root={tmp_path / 'runs'}")
    path = write_args_file(tmp_path / "saved" / "mine.yaml", overrides, "mine", ["method.lora.r=4,8"])
    saved = read_args_file(path)
    assert (saved.overrides, saved.name, saved.sweep) == (overrides, "mine", ["method.lora.r=4,8"])

    # back into the form: groups and fields in their boxes, the rest in the free box; the same overrides again
    back_groups, back_values, back_free = form.form_from_overrides(saved.overrides, compose_defaults,
                                                                   ignore_keys=("run.output_root",))
    assert back_groups["method"] == "lora" and back_values["train.grad_accum"] == 2
    assert back_values["method.lora.target_modules"] == "all-linear"
    again = form.form_overrides(back_groups, back_values, form.join_overrides(back_free), compose_defaults(back_groups),
                                defaults_for=compose_defaults)
    # the free box's train.log_every=1 now sits in its field: the same overrides, in the form's order
    assert sorted(again + [f"run.output_root={tmp_path / 'runs'}"]) == sorted(overrides)
    assert back_values["train.log_every"] == 1 and back_free == ["method.lora.dropout=0.1"]

    # the CLI runs the same file: its dry run resolves the config the UI's preview shows (the grid dropped here:
    # without it the file is one run, as Preview shows one)
    write_args_file(path, overrides, "mine")
    shown = actions.preview(overrides, "mine")
    assert shown.ok, shown.verdict
    out = subprocess.run([sys.executable, "-m", "launcher", "train", "--args-file", str(path), "--dry-run"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("# resolved config\n", 1)[1].startswith(shown.config_yaml)
    assert not list((tmp_path / "runs").rglob("config.yaml"))  # a dry run makes no run


def test_saved_arguments_refuse_what_they_are_not(tmp_path):
    lf = tmp_path / "lf.yaml"
    lf.write_text("stage: sft\nmodel_name_or_path: x\n")
    with pytest.raises(ConfigError, match="--from-llamafactory"):
        read_args_file(lf)
    bad = tmp_path / "bad.yaml"
    bad.write_text("launcher_args: 1\noverrides: [a=1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        read_args_file(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("launcher_args: 1\noverrides: {a: 1}\n")
    with pytest.raises(ConfigError, match="'overrides' must be a list"):
        read_args_file(wrong)
    with pytest.raises(ConfigError, match="exists and is not a saved-arguments file"):
        write_args_file(lf, ["a=1"])  # a file of the user's is never overwritten
    assert lf.read_text().startswith("stage: sft")
    from launcher.cli import positional_words

    assert positional_words(["--args-file", "x.yaml", "a=1", "--name", "n", "--dry-run"]) == ["a=1"]


def _run_dir(root, name, state_files=()):
    from launcher.config.compose import compose_config

    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, compose_config([f"run.output_root={root}"]))
    for rel in state_files:
        (run_dir / rel).mkdir(parents=True)
    return run_dir


def test_remove_run_refuses_running_and_asks_the_name_of_trained_ones(tmp_path):
    root = tmp_path.resolve()
    half = _run_dir(root, "half-made")
    trained = _run_dir(root, "trained", ["checkpoints/step-2"])
    rel_trained = str(trained.relative_to(root))
    assert runs.remove_run(root, half, "RUNNING").name == "remove_running" and half.is_dir()
    note = runs.remove_run(root, trained, "FAILED", typed_name="trained")
    assert note.name == "remove_needs_name" and trained.is_dir()
    assert rel_trained in note.text("en") and rel_trained in note.text("zh-CN")
    assert runs.remove_run(root, half, "UNKNOWN").name == "removed"
    assert not (root / "half-made").exists()  # its now empty name/date folders go too
    assert runs.remove_run(root, trained, "FAILED", typed_name=rel_trained).name == "removed"
    assert not trained.exists() and [i.rel for i in runs.scan(root)] == []


def test_runs_tab_health_is_launcher_status_reader_worded(tmp_path):
    from launcher.training import progress as prog
    from launcher.ui.tabs.runs import health_markdown

    run_dir = _run_dir(tmp_path.resolve(), "health")
    assert health_markdown(run_dir, "en") == ""  # nothing reported yet: nothing shown
    env = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "0"}
    prog.record_attempt(run_dir, 2)
    for rank, step in ((0, 5), (1, 4)):
        p = prog.Progress(run_dir, rank, 2, environ=env)
        p.report(prog.FORWARD_BACKWARD, step)
        p.write()
    prog.append_jsonl(prog.progress_dir(run_dir) / prog.STALLS_FILE,
                      {"time": "2026-12-07T13:00:00", "attempt": "77.0", "stalled_ranks": [1],
                       "phase": prog.COLLECTIVE, "step": 4, "folder": str(run_dir / "stacks" / "a"), "description": ""})
    prog.record_attempt(run_dir, 2)  # a restart
    en, zh = health_markdown(run_dir, "en"), health_markdown(run_dir, "zh-CN")
    assert "phase **forward/backward** (step 4)" in en
    assert "rank 0: forward/backward, step 5, last progress" in en and "rank 1:" in en
    assert "restarts: 1" in en and f"stacks in `{run_dir / 'stacks' / 'a'}`" in en
    assert "阶段 **前向/反向**（步数 4）" in zh and "重启：1 次" in zh and "集合通信" in zh
    assert "resharded" not in en  # no reshard recorded: no line
    from launcher.engines.reshard import describe_reshard

    prog.record_reshard(run_dir, describe_reshard({"step": 2, "world_size": 2, "parallelism": "fsdp",
                                                   "micro_batch_size": 4, "grad_accum": 1}, "fsdp", 1, 2))
    en, zh = health_markdown(run_dir, "en"), health_markdown(run_dir, "zh-CN")
    assert "resharded at step 2: world size 2 -> 1 (fsdp), grad_accum 1 -> 2 (global batch 8 kept)" in en
    assert "于步数 2 重新分片：进程数 2 -> 1（fsdp），梯度累积 1 -> 2（全局批量 8 不变）" in zh


def test_grpo_keys_show_for_grpo_only_and_its_rewards_are_drawn():
    grpo_keys = {f.key for f in form.FIELDS if f.section == "grpo"}
    assert {"method.grpo.num_generations", "method.grpo.max_completion_length", "method.grpo.rewards"} <= grpo_keys
    methods = form.group_options()["method"]
    assert {"rm", "grpo", "grpo_lora"} <= set(methods)
    for method in methods:  # every method file, as conf/method holds them: its block's row and no other
        shown = {f.section for f in form.FIELDS if form.applies(f, method)} - {"model", "data", "train", "cluster"}
        assert ("grpo" in shown) == method.startswith("grpo"), (method, shown)
        assert ("ppo" in shown) == method.startswith("ppo"), (method, shown)  # reward model, KL, epochs
    rewards = form.Field("method.grpo.rewards", "words", section="grpo")
    assert form.coerce(rewards, "exact_match, rm:/runs/a/b/c,mod:fn") == ["exact_match", "rm:/runs/a/b/c", "mod:fn"]
    records = [{"kind": "train", "step": 1, "loss": 0.1, "reward": 0.25},
               {"kind": "eval", "step": 1, "eval_loss": 0.2, "eval/reward": 0.5}]
    assert {r["series"] for r in plots.metric_rows(records)} == {"train", "reward", "eval", "eval reward"}
    from launcher.ui.tabs.page import curve_chart

    spec = json.loads(curve_chart(plots.metric_rows(records), plots.LOSS, "zh-CN").plot)
    assert {d["series"] for d in next(iter(spec["datasets"].values()))} == {"训练", "奖励", "评估", "评估奖励"}
    assert "损失、奖励" in json.dumps(spec, ensure_ascii=False)


def test_a_saved_arguments_file_given_as_an_override_is_pointed_to_args_file(tmp_path, capsys):
    from launcher.cli import main

    path = write_args_file(tmp_path / "mine.yaml", ["train.max_steps=1"])
    assert main(["train", str(path)]) == 2
    assert f"{path} is a saved-arguments file: use launcher train --args-file {path}" in capsys.readouterr().err
