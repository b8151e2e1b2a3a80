"""KTO's data and config refusals: one line each, before training."""
from __future__ import annotations

import pytest

from launcher.config.compose import compose_config
from launcher.errors import DataError
from tests.kto.helpers import fast, run_kto, write_feedback_data


def test_sft_on_feedback_data_is_refused_naming_kto(tmp_path, output_root):
    from tests.test_train import run_sft

    data = write_feedback_data(tmp_path / "data")
    with pytest.raises(DataError, match="method=kto"):
        run_sft(output_root, [f"data.dataset_dir={data}", "data.datasets=[feedback]", "data.eval_datasets=[]",
                                 "data.use_cache=false"])


def test_kto_on_data_without_kto_tag_is_refused(tmp_path, output_root):
    data = write_feedback_data(tmp_path / "data")
    with pytest.raises(DataError, match="kto_tag"):
        run_kto(output_root, [*fast(data), "method=kto", "data.datasets=[sft]", "data.eval_datasets=[]"])


def test_kto_tag_must_be_a_boolean(tmp_path, output_root):
    data = write_feedback_data(tmp_path / "data")
    text = (data / "feedback.json").read_text().replace('"tag": true', '"tag": "yes"', 1)
    (data / "feedback.json").write_text(text)
    with pytest.raises(DataError, match=r"feedback.json.*kto_tag.*true .*false"):
        run_kto(output_root, [*fast(data), "method=kto"])


def test_kto_takes_a_micro_batch_of_one_row():
    # its KL row then takes LLaMA-Factory's pairing, made when the data is preprocessed (tests/kto/test_kto_data.py)
    assert compose_config(["method=kto", "train.micro_batch_size=1"]).train.micro_batch_size == 1


def test_dry_run_composes_kto_and_refuses_the_wrong_data(tmp_path, capsys):
    from launcher.cli import main

    data = write_feedback_data(tmp_path / "data")
    base = ["train", "--dry-run", f"run.output_root={tmp_path / 'out'}", f"data.dataset_dir={data}",
            "data.eval_datasets=[]", "train.exact_match_samples=0"]
    assert main([*base, "method=kto", "data.datasets=[feedback]"]) == 0
    assert "python -m recipes.kto" in capsys.readouterr().out
    assert main([*base, "method=kto_lora", "data.datasets=[sft]"]) != 0
    err = capsys.readouterr().err
    assert "method=kto needs feedback data, but 'sft'" in err and "no kto_tag column" in err, err
    assert main([*base, "method=lora", "data.datasets=[feedback]"]) != 0
    err = capsys.readouterr().err
    assert "dataset 'feedback' maps a kto_tag column ('tag'" in err and "Use method=kto" in err, err


def test_kto_demo_data_composes():
    cfg = compose_config(["method=kto", "data=kto_demo"])
    assert cfg.data.datasets[0].name == "kto_en_demo" and cfg.method.kto.beta == 0.1
