"""Issue 20, item 2/3: whatever would fail when the job starts fails at `launcher train --dry-run`, in one line
per problem, all problems at once. These are the config-level checks: value ranges, group options that do
not exist, values left unset, a LLaMA-Factory YAML given to `launcher train`, the default data group's keys
leaking into the user's own data.
"""
from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from launcher.cli import main
from launcher.config.compose import compose_config
from launcher.config.ranges import RANGES
from launcher.config.schema import Config
from launcher.data.mixing import split_eval
from launcher.errors import ConfigError, PreflightError
from launcher.checks.preflight import run_preflight


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative run.output_root lands in a temp dir


def numeric_keys(cls=Config, prefix=""):
    """Every int/float (or Optional/Union of them) field of the schema, as a dotted key."""
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from numeric_keys(tp, key + ".")
            continue
        args = set(typing.get_args(tp)) or {tp}
        if args & {int, float}:
            yield key


def test_every_numeric_key_has_a_range():
    keys = list(numeric_keys())
    assert "method.lora.alpha" in keys and "data.val_size" in keys
    assert [k for k in keys if k not in RANGES] == []
    assert [k for k in RANGES if k not in keys] == []  # no range for a key that is gone


OUT_OF_RANGE = [
    (["data.val_size=1.5"], r"data\.val_size: 1\.5 is a fraction of the training mix and must be in \[0, 1\)"),
    (["data.val_size=1.0"], r"data\.val_size: 1\.0 is a fraction .*write the integer data\.val_size=1"),
    (["data.val_size=-2"], r"data\.val_size: a count must be >= 0, got -2"),
    (["method=lora", "method.lora.alpha=-16"], r"method\.lora\.alpha: must be > 0 .*got -16"),
    (["train.max_grad_norm=-1"], r"train\.max_grad_norm: must be >= 0 \(0: no clipping\), got -1\.0"),
    (["method.weight_decay=-0.1"], r"method\.weight_decay: must be >= 0, got -0\.1"),
    (["method.adam_beta2=1.5"], r"method\.adam_beta2: must be in \[0, 1\), got 1\.5"),
    (["train.min_lr_ratio=2"], r"train\.min_lr_ratio: must be in \[0, 1\], got 2\.0"),
    (["train.log_every=0"], r"train\.log_every: must be >= 1, got 0"),
    (["train.max_new_tokens=0"], r"train\.max_new_tokens: must be >= 1, got 0"),
    (["train.seed=-1"], r"train\.seed: must be in \[0, 4294967295\], got -1"),
    (["method.dpo.simpo_gamma=-1"], r"method\.dpo\.simpo_gamma: must be >= 0, got -1\.0"),
    (["cluster.max_restarts=-1"], r"cluster\.max_restarts: must be >= 0, got -1"),
    (["cluster.gpu_memory_gb=-1"], r"cluster\.gpu_memory_gb: must be > 0, got -1\.0"),
    (["cluster.array_parallelism=0"], r"cluster\.array_parallelism: must be >= 1, got 0"),
]


@pytest.mark.parametrize("overrides,match", OUT_OF_RANGE, ids=[o[-1] for o, _ in OUT_OF_RANGE])
def test_out_of_range_value_is_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        compose_config(overrides)  # composing refuses it (sweeps, bench, data preview)
    with pytest.raises(PreflightError, match=match):
        run_preflight(compose_config(overrides, check=False))  # and so does the preflight (train)


def test_val_size_integer_is_a_count_and_float_a_fraction():
    assert compose_config(["data.val_size=3"]).data.val_size == 3
    assert isinstance(compose_config(["data.val_size=3"]).data.val_size, int)
    train, held = split_eval(list(range(10)), compose_config(["data.val_size=3"]).data.val_size, seed=0)
    assert len(held) == 3 and len(train) == 7
    train, held = split_eval(list(range(10)), compose_config(["data.val_size=0.2"]).data.val_size, seed=0)
    assert len(held) == 2


def test_dry_run_lists_every_problem(capsys):
    rc = main(["train", "--dry-run", "method=lora", "method.lora.alpha=-1", "data.val_size=-2", "run.resume=latest"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "preflight refused the run (3 problems)" in err
    assert "method.lora.alpha: must be > 0" in err and "data.val_size: a count must be >= 0" in err
    assert "run.resume: 'latest' is not auto, never or a checkpoint path" in err


@pytest.mark.parametrize("override,group", [
    ("experiment=vl_dmeo", "experiment"),  # a misspelt preset: an optional group used to drop it silently
    ("experiment=tasks_lorra", "experiment"),
    ("method=loar", "method"),
    ("model=tiny_qwen", "model"),
])
def test_option_that_does_not_exist_is_refused_with_the_options(override, group):
    from launcher.config.compose import conf_dir

    option = override.split("=")[1]
    options = ", ".join(sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")))
    assert "tasks_lora" in options or group != "experiment"
    with pytest.raises(ConfigError) as info:
        compose_config([override])
    assert str(info.value) == f"{override}: conf/{group}/ has no option '{option}'; options: {options}"


def test_existing_experiment_still_applies():
    assert compose_config(["experiment=tasks_lora"]).method.name == "lora"


def test_unset_required_value_says_what_to_set():
    with pytest.raises(ConfigError, match=r"^model\.name_or_path: has no value .*model\.name_or_path=Qwen/"):
        compose_config(["model=hf"])


def test_llamafactory_yaml_says_how_to_use_it(tmp_path, capsys):
    lf = tmp_path / "qwen_lora_sft.yaml"
    lf.write_text("model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct\nstage: sft\ndo_train: true\n"
                  "finetuning_type: lora\ndataset: alpaca_en_demo\ntemplate: qwen\noutput_dir: saves/x\n")
    assert main(["train", str(lf)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {lf} looks like a LLaMA-Factory config: use launcher train --from-llamafactory {lf}")
    other = tmp_path / "mine.yaml"
    other.write_text("method:\n  lr: 1e-4\n")
    assert main(["train", str(other)]) == 2
    assert "launcher train takes Hydra overrides (key=value, group=option), not a config file" in capsys.readouterr().err


def own_dataset_dir(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = [{"instruction": f"say {i}", "output": str(i)} for i in range(20)]
    (folder / "rows.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.json"}}))
    return folder


def test_own_data_does_not_inherit_the_default_tasks_group(tmp_path):
    folder = own_dataset_dir(tmp_path)
    cfg = compose_config([f"data.dataset_dir={folder}", "data.datasets=[rows]"])
    # data=tasks would have added its held-out set (tasks_eval, not in this folder), 10 epochs, the
    # exact-match check and cutoff 128: none of them carries over.
    assert cfg.data.name == "custom" and cfg.data.eval_datasets == []
    assert cfg.train.exact_match_samples == 0 and cfg.train.epochs == 3.0 and cfg.data.cutoff_len == 1024
    assert run_preflight(cfg) == []
    # Chosen explicitly, a group keeps its settings.
    explicit = compose_config(["data=tasks", f"data.dataset_dir={folder}", "data.datasets=[rows]"])
    assert explicit.data.eval_datasets[0].name == "tasks_eval" and explicit.train.exact_match_samples == 120
    # An experiment that picks its own data group keeps it too.
    bench = compose_config(["experiment=bench_reference", f"data.dataset_dir={folder}", "data.datasets=[rows]"])
    assert bench.data.name == "alpaca-demo"


def test_own_data_note_on_the_command_line(tmp_path, capsys):
    folder = own_dataset_dir(tmp_path)
    assert main(["train", "--dry-run", f"data.dataset_dir={folder}", "data.datasets=[rows]"]) == 0
    err = capsys.readouterr().err
    assert "note: data.dataset_dir/data.datasets given without a data group: using data=custom" in err


def test_sweep_points_get_the_same_checks(tmp_path):
    from launcher.sweep.expand import expand_grid
    from launcher.sweep.plan import check_points

    with pytest.raises(PreflightError, match=r"experiment=vl_dmeo: conf/experiment/ has no option 'vl_dmeo'"):
        check_points(expand_grid(["experiment=vl_dmeo", "method.lr=1e-3,2e-3"]))
    with pytest.raises(PreflightError, match=r"model\.name_or_path: has no value"):
        check_points(expand_grid(["model=hf", "method.lr=1e-3,2e-3"]))
    folder = own_dataset_dir(tmp_path)
    _, points = check_points(expand_grid([f"data.dataset_dir={folder}", "data.datasets=[rows]", "method.lr=1e-3,2e-3"]))
    assert {p.cfg.data.name for p in points} == {"custom"} and all(p.cfg.train.exact_match_samples == 0 for p in points)
