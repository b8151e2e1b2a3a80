"""Config composition and validation: every group composes; bad keys and types fail in one line, early."""
from __future__ import annotations

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config, conf_dir
from launcher.config.schema import Config, load_run_config, parse_config, config_to_dict
from launcher.errors import ConfigError
from launcher.launch.rundir import make_run_dir, write_run_config


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
        (["method=nope"], "method=nope: conf/method/ has no option 'nope'; options: "
         + ", ".join(sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml")))),
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


@pytest.mark.parametrize("value", ["plain/path-1.0", "gpu a", "it's", "true", "null", "12", "1e-4", "a,b", "x=y",
                                   "${oops}x", "back\\slash", "end\\", "q\\'x", "a:b", "[x]"])
def test_hydra_value_gives_back_a_string_through_compose(value):
    from launcher.config.compose import compose_dict, hydra_value

    assert compose_dict([f"model.name={hydra_value(value)}"])["model"]["name"] == value  # a free string key


@pytest.mark.parametrize("value", [
    None, True, False, 0, -3, 2.5, 1e-4, "gpu a", "it's", "12",
    ["a", "b c", 1, True, None], ("x", 2.0), [], ["nested", ["1", 2]],
    {"stage": 2, "offload": True, "name": "zero 2", "targets": ["q_proj", "v proj"]}, {},
])
def test_hydra_value_round_trips_through_the_override_grammar(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from launcher.config.compose import hydra_value

    parsed = OverridesParser.create().parse_override(f"key={hydra_value(value)}").value()
    expected = list(value) if isinstance(value, tuple) else value
    assert parsed == expected and type(parsed) is type(expected)


def test_hydra_value_refuses_a_dict_key_hydra_would_misread():
    from launcher.config.compose import hydra_value

    for key in ("two words", "true", "12", 3):
        with pytest.raises(ValueError, match="dict key"):
            hydra_value({key: 1})


def test_every_schema_field_has_a_docstring():
    """Each field of each dataclass in the schema is followed by its docstring (what it does, its unit, what it
    interacts with): the schema is the reference a user reads for a key."""
    import ast
    from pathlib import Path

    import launcher.config.schema as schema

    tree = ast.parse(Path(schema.__file__).read_text())
    undocumented = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef) or not any("dataclass" in ast.unparse(d) for d in cls.decorator_list):
            continue
        for node, following in zip(cls.body, cls.body[1:] + [None]):
            if not isinstance(node, ast.AnnAssign):
                continue
            documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                and isinstance(following.value.value, str) and following.value.value.strip()
            if not documented:
                undocumented.append(f"{cls.name}.{node.target.id}")
    assert undocumented == [], f"schema fields without a docstring under them: {', '.join(undocumented)}"


def _conf_leaves(data: dict, prefix: str = ""):
    """(dotted key, value) of what a conf file sets; a dict-valued key the schema takes whole is one leaf."""
    whole = ("model.config", "parallelism.deepspeed", "cluster.sbatch_extra", "cluster.env")
    for key, value in data.items():
        if not prefix and key == "defaults":
            continue
        dotted = prefix + str(key)
        if isinstance(value, dict) and value and dotted not in whole:
            yield from _conf_leaves(value, dotted + ".")
        else:
            yield dotted, value


def test_conf_files_set_only_what_differs_from_the_schema():
    """Defaults live in the schema. A conf key that restates the schema's default is allowed only where an earlier
    layer may set it otherwise (an experiment resetting what a group set; a global-package group resetting what
    another group set), or with a comment on its line saying why it is there."""
    import re

    import yaml

    from launcher.config.schema import Config, config_to_dict

    defaults = config_to_dict(Config())

    def schema_default(key):
        value = defaults
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return KeyError  # not a schema key: parse_config refuses it elsewhere
            value = value[part]
        return value

    entries = []  # (file, group, dotted key, value)
    root = conf_dir()
    for path in sorted(root.rglob("*.yaml")):
        if ".example" in path.name:
            continue
        text = path.read_text()
        group = None if path.parent == root else path.parent.name
        global_package = group in (None, "experiment") or "@package _global_" in text
        for key, value in _conf_leaves(yaml.safe_load(text) or {}):
            entries.append((path, group, key if global_package else f"{group}.{key}", value))

    def commented(path, key):
        leaf = key.rsplit(".", 1)[-1]
        return any(re.match(rf"\s*{re.escape(leaf)}\s*:[^#]*#", line) for line in path.read_text().splitlines())

    restated = []
    for path, group, key, value in entries:
        default = schema_default(key)
        if value != default:
            continue
        earlier = [e for e in entries if e[2] == key and e[3] != default
                   and (e[1] != "experiment" if group == "experiment" else e[1] not in (group, "experiment"))]
        if not earlier and not commented(path, key):
            restated.append(f"{path.relative_to(root)}: {key}={value!r}")
    assert restated == [], ("these conf keys restate the schema's default; remove them (or say why in a comment):\n"
                            + "\n".join(restated))
