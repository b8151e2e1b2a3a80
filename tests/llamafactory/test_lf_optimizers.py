"""LLaMA-Factory's optimizer keys (optim, use_galore, use_apollo, use_badam, use_adam_mini, use_muon and theirs,
pure_bf16) -> method.optimizer and method.galore/apollo/badam, in the shapes of LF's examples/extras/*; the
GaLore example (layer-wise, pure bf16) through the CLI's dry run."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config
from launcher.config.llamafactory import translate
from launcher.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

# examples/extras/<optimizer>/*_full_sft.yaml: the keys that differ between them
BASE = {"model_name_or_path": "/m", "stage": "sft", "do_train": True, "finetuning_type": "full", "dataset": "tasks",
        "dataset_dir": str(REPO_ROOT / "data"), "template": "qwen", "cutoff_len": 128, "output_dir": "/tmp/x",
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-5,
        "num_train_epochs": 3.0, "bf16": True}
GALORE = {"use_galore": True, "galore_layerwise": True, "galore_target": "all", "galore_rank": 128,
          "galore_scale": 2.0, "gradient_accumulation_steps": 1, "pure_bf16": True, "bf16": None}
APOLLO = {"use_apollo": True, "apollo_layerwise": True, "apollo_target": "all", "apollo_rank": 128,
          "apollo_scale": 32.0, "apollo_scale_type": "channel", "gradient_accumulation_steps": 1, "pure_bf16": True,
          "bf16": None}
BADAM = {"use_badam": True, "badam_mode": "layer", "badam_switch_mode": "ascending", "badam_switch_interval": 50,
         "badam_verbose": 2}


def overrides(extra: dict) -> dict:
    lf = {**BASE, **extra}
    lf = {k: v for k, v in lf.items() if v is not None}
    out = {}
    for o in translate(lf, cwd=Path("/tmp")).overrides:
        key, value = o.split("=", 1)
        out[key] = value
    return out


@pytest.mark.parametrize("extra, expected", [
    (GALORE, {"method.optimizer": "galore_adamw", "method.galore.layerwise": "true", "method.galore.target": "all",
              "method.galore.rank": "128", "method.galore.scale": "2.0", "method.pure_bf16": "true",
              "model.dtype": "bfloat16"}),
    ({**GALORE, "optim": "adamw_8bit", "galore_target": "q_proj,v_proj", "galore_layerwise": False},
     {"method.optimizer": "galore_adamw_8bit", "method.galore.target": "[q_proj,v_proj]"}),
    ({**GALORE, "optim": "adafactor"}, {"method.optimizer": "galore_adafactor"}),
    (APOLLO, {"method.optimizer": "apollo_adamw", "method.apollo.layerwise": "true", "method.apollo.rank": "128",
              "method.apollo.scale_type": "channel", "method.pure_bf16": "true"}),
    (BADAM, {"method.optimizer": "badam", "method.badam.switch_mode": "ascending",
             "method.badam.switch_interval": "50"}),
    ({**BADAM, "badam_switch_interval": -1}, {"method.badam.switch_mode": "fixed"}),
    ({"use_adam_mini": True}, {"method.optimizer": "adam_mini"}),
    ({"use_muon": True}, {"method.optimizer": "muon"}),
    ({"optim": "paged_adamw_8bit"}, {"method.optimizer": "paged_adamw_8bit"}),
    ({"optim": "adamw_bnb_8bit"}, {"method.optimizer": "adamw_8bit"}),
    ({"optim": "adafactor"}, {"method.optimizer": "adafactor"}),
])
def test_optimizer_keys(extra, expected):
    got = overrides(extra)
    for key, value in expected.items():
        assert got.get(key) == value, f"{key}: {got.get(key)} (all: {got})"
    compose_config([f"{k}={v}" for k, v in got.items() if k.startswith(("method.", "train.grad"))],
                   )  # every override composes and validates


@pytest.mark.parametrize("extra, key, words", [
    ({"use_galore": True, "use_badam": True}, "use_badam", "keep one"),
    ({"use_adam_mini": True, "use_muon": True}, "use_muon", "keep one"),
    ({**BADAM, "badam_mode": "ratio"}, "badam_mode", "ratio-wise"),
    ({"use_galore": True, "optim": "sgd"}, "optim", "no GaLore variant"),
    ({"use_apollo": True, "optim": "adafactor"}, "optim", "adamw_torch only"),
    ({"optim": "lion_32bit"}, "optim", "not supported"),
    ({"pure_bf16": True, "fp16": True, "bf16": None}, "pure_bf16", "keep one"),
])
def test_refusals_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as err:
        overrides(extra)
    assert f": {key}: " in str(err.value) and words in str(err.value)


def test_keys_of_an_unused_optimizer_are_noted_not_applied():
    t = translate({**BASE, "galore_rank": 8}, cwd=Path("/tmp"))
    assert not any(o.startswith("method.galore") for o in t.overrides)
    assert any("galore_rank: ignored because use_galore is not true" in n for n in t.notes)


def test_galore_example_dry_run(tmp_path, tiny_hf_model, capsys):
    """LF's examples/extras/galore/llama3_full_sft.yaml (layer-wise, pure bf16) passes the dry run on this CPU, which
    says the precision it will train in."""
    lf = {**BASE, **GALORE, "model_name_or_path": str(tiny_hf_model), "output_dir": str(tmp_path / "saves")}
    lf = {k: v for k, v in lf.items() if v is not None}
    path = tmp_path / "galore.yaml"
    path.write_text(yaml.safe_dump(lf, sort_keys=False))
    assert cli_main(["train", "--from-llamafactory", str(path), "train.max_steps=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out.split("# resolved config\n", 1)[1].split("\n# ", 1)[0])
    assert cfg["method"]["optimizer"] == "galore_adamw" and cfg["method"]["galore"]["layerwise"] is True
    assert cfg["method"]["galore"]["rank"] == 128 and cfg["method"]["pure_bf16"] is True
    assert "# precision: pure bfloat16" in out and "no fp32 master copy" in out and "half" in out
