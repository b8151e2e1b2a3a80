"""Config composition and validation: every group composes; bad keys and types fail in one line, early."""
from __future__ import annotations

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config, conf_dir
from launcher.config.schema import Config, load_run_config, parse_config, config_to_dict
from launcher.errors import ConfigError
from launcher.rundir import make_run_dir, write_run_config


def group_options():
    for group in sorted(p for p in conf_dir().iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            yield group.name, option.stem


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "model" and option == "hf":
        overrides.append("model.name_or_path=/some/local/model")
    if group == "data" and option == "custom":  # the user's own data: names no dataset of its own
        overrides.append("data.datasets=[tasks]")
    if group == "data" and option == "llamafactory":
        overrides.append("data.datasets=[tasks]")  # --from-llamafactory sets it from the file's dataset
    if group == "cluster" and option != "local":
        overrides.append("cluster.nodes=1")
    if group == "method" and option == "pretrain":
        overrides.append("data=c4_demo")  # pretraining packs plain text; the default data is instructions
    cfg = compose_config(overrides)
    assert isinstance(cfg, Config)
    if group == "experiment":
        return
    assert getattr(cfg, group).name, f"{group}={option} must set {group}.name"


def test_defaults_compose_and_roundtrip(tmp_path):
    cfg = compose_config([])
    assert cfg.model.arch == "qwen2" and cfg.method.name == "sft_full" and cfg.cluster.kind == "local"
    run_dir = make_run_dir(tmp_path, "x")
    write_run_config(run_dir, cfg)
    again = load_run_config(run_dir)
    assert again.run.dir == str(run_dir)
    assert config_to_dict(again)["model"] == config_to_dict(cfg)["model"]


def test_overrides_reach_typed_config():
    cfg = compose_config(["method=lora", "method.lora.r=16", "method.lr=3e-4", "train.min_lr_ratio=0.1"])
    assert cfg.method.finetuning == "lora" and cfg.method.lora.r == 16
    assert cfg.method.lr == pytest.approx(3e-4) and cfg.train.min_lr_ratio == pytest.approx(0.1)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["train.micro_batchsize=4"], "unknown config key 'train.micro_batchsize'"),
        (["method.lora.rank=8"], "unknown config key 'method.lora.rank'"),
        (["method.lr=fast"], "method.lr: expected float"),
        (["train.max_steps=ten"], "train.max_steps: expected int"),
        (["train.gradient_checkpointing=maybe"], "train.gradient_checkpointing: expected bool"),
        (["method=nope"], "method=nope: conf/method/ has no option 'nope'; options: dpo, dpo_lora, freeze, kto, kto_lora, lora, pretrain, rm, rm_lora, sft_full"),
        (["train.global_batch_size=12"], "train.global_batch_size: 12 is not divisible"),
        (["method.name=lora"], "method.finetuning: method=lora needs method.finetuning=lora"),
        (["train.lr_scheduler=exp"], "train.lr_scheduler: 'exp' is not one of"),
        (["cluster.nodes=2"], "cluster.nodes: cluster=local runs on this host only"),
        (["data.datasets=[]"], "data.datasets: name at least one dataset"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_cli_error_leaves_no_run_dir(tmp_path, capsys):
    root = tmp_path / "outs"
    code = cli_main(["train", f"run.output_root={root}", "method.lr=fast"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "method.lr" in err
    assert not root.exists() or not any(root.rglob("config.yaml"))


def test_run_dirs_are_never_reused(tmp_path):
    import datetime as dt

    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    first = make_run_dir(tmp_path, "run", now)
    (first / "precious.txt").write_text("keep")
    second = make_run_dir(tmp_path, "run", now)
    assert first != second and (first / "precious.txt").read_text() == "keep"
    assert first.parent.name == "2026-01-02" and first.name == "03-04-05" and second.name == "03-04-05-1"


def test_parse_config_rejects_wrong_nested_type():
    with pytest.raises(ConfigError, match="method.lora: expected a mapping"):
        parse_config({"method": {"lora": 3}, "data": {"datasets": ["tasks"]}})
