"""method=rm's configuration: LLaMA-Factory's stage: rm translates, non-ranking data is refused at the dry run
naming the dataset, and what is not built as a reward model is refused when the config is composed."""
from __future__ import annotations

import json

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config
from launcher.config.llamafactory import translate
from launcher.errors import ConfigError
from tests.rm.helpers import SMALL_MODEL

RM = {"model_name_or_path": "/m", "stage": "rm", "do_train": True, "finetuning_type": "full",
      "dataset": "dpo_en_demo", "template": "qwen", "cutoff_len": 128, "learning_rate": 1.0e-5,
      "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "report_to": "none"}


@pytest.mark.parametrize("finetuning,method,extra", [("full", "rm", []), ("lora", "rm_lora", []),
                                                     ("freeze", "rm", ["method.finetuning=freeze"])])
def test_llamafactory_stage_rm_translates(tmp_path, finetuning, method, extra):
    t = translate({**RM, "finetuning_type": finetuning}, cwd=tmp_path)
    assert f"method={method}" in t.overrides
    for override in extra:
        assert override in t.overrides
    cfg = compose_config([o for o in t.overrides if not o.startswith("model.name_or_path")] + ["model=tiny_qwen2"])
    assert cfg.method.name == "rm" and cfg.method.finetuning == finetuning


def test_non_ranking_data_is_refused_at_the_dry_run_naming_the_dataset(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps([{"instruction": "a", "output": "b"}] * 4))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"plain_sft": {"file_name": "s.json"}}))
    rc = cli_main(["train", "--dry-run", "method=rm", f"data.dataset_dir={tmp_path}", "data.datasets=[plain_sft]",
                   "data.eval_datasets=[]", "data.use_cache=false", *SMALL_MODEL,
                   f"run.output_root={tmp_path / 'out'}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1, lines
    assert "method=rm needs preference data" in lines[0] and "'plain_sft'" in lines[0], lines[0]


@pytest.mark.parametrize("overrides,match", [
    (["method=rm_lora", "model=hf", "model.name_or_path=/m", "method.lora.quantize=4bit"],
     "method.lora.quantize: a quantized .* is not built as a reward model"),
    (["method=rm", "model=tiny_qwen2_vl"], "method=rm scores text with AutoModelForSequenceClassification"),
    (["method=rm", "method.rm.probe_pairs=-1"], "method.rm.probe_pairs"),
])
def test_what_is_not_a_reward_model_is_refused(overrides, match):
    """Refused when the config is checked: by the schema, or (the model's kind) by the preflight's model check."""
    from launcher.checks.preflight import run_preflight
    from launcher.errors import PreflightError

    with pytest.raises((ConfigError, PreflightError), match=match):
        run_preflight(compose_config(["data=prefs", *overrides]))
