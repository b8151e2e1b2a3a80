"""What a user can get wrong with DPO gives one line naming the row or key, through the CLI, before training."""
from __future__ import annotations

import json
import re

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config
from launcher.errors import ConfigError, DataError
from launcher.training.objectives.preference import check_shared_prompt
from tests.dpo.helpers import SMALL_MODEL

GOOD = {"instruction": "Add.", "input": "1+2", "chosen": "3", "rejected": "4"}


def write_prefs(tmp_path, rows, formatting="alpaca"):
    (tmp_path / "p.json").write_text(json.dumps(rows))
    entry = {"file_name": "p.json", "ranking": True}
    if formatting == "sharegpt":
        entry.update(formatting="sharegpt", columns={"messages": "conversations", "chosen": "chosen",
                                                     "rejected": "rejected"})
    (tmp_path / "dataset_info.json").write_text(json.dumps({"p": entry}))


def train_cli(tmp_path, capsys, *extra):
    rc = cli_main(["train", "method=dpo", f"data.dataset_dir={tmp_path}", "data.datasets=[p]", "data.eval_datasets=[]",
                   "data.use_cache=false", "train.max_steps=1", "train.micro_batch_size=1", *SMALL_MODEL,
                   f"run.output_root={tmp_path / 'out'}", *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    return rc, lines


@pytest.mark.parametrize("bad,match", [
    ({"instruction": "Add.", "input": "2+2", "rejected": "5"}, r"p\.json: row 1: missing column 'chosen'"),
    ({"instruction": "Add.", "input": "2+2", "chosen": "4", "rejected": ""}, r"p\.json: row 1: .*rejected.* empty"),
    ({"instruction": "Add.", "input": "2+2", "chosen": "  ", "rejected": "5"}, r"p\.json: row 1: .*chosen.* empty"),
    ({"instruction": "Add.", "input": "2+2", "chosen": None, "rejected": "5"}, r"p\.json: row 1: .*'chosen' is missing"),
])
def test_bad_pair_names_the_row(tmp_path, capsys, bad, match):
    write_prefs(tmp_path, [GOOD, bad])
    rc, lines = train_cli(tmp_path, capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert re.search(match, lines[0]), lines[0]


def test_sharegpt_empty_rejected_names_the_row(tmp_path, capsys):
    good = {"conversations": [{"from": "human", "value": "1+2"}], "chosen": {"from": "gpt", "value": "3"},
            "rejected": {"from": "gpt", "value": "4"}}
    bad = dict(good, rejected={"from": "gpt", "value": ""})
    write_prefs(tmp_path, [good, good, bad], formatting="sharegpt")
    rc, lines = train_cli(tmp_path, capsys)
    assert rc == 2 and "row 2" in lines[0] and "rejected" in lines[0] and "empty" in lines[0], lines


def test_sft_data_is_refused(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps([{"instruction": "a", "output": "b"}] * 4))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"p": {"file_name": "s.json"}}))
    rc, lines = train_cli(tmp_path, capsys)
    assert rc == 2 and "method=dpo needs preference data" in lines[0]


@pytest.mark.parametrize("override,match", [
    ("method.dpo.beta=0", "method.dpo.beta: must be > 0"),
    ("method.dpo.label_smoothing=0.5", r"method.dpo.label_smoothing: must be in \[0, 0.5\)"),
    ("method.dpo.loss_type=kto", "method.dpo.loss_type: 'kto' is not one of"),
])
def test_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        compose_config(["method=dpo", "data=prefs", override])
    with pytest.raises(ConfigError, match="only loss_type sigmoid or simpo"):
        compose_config(["method=dpo", "data=prefs", "method.dpo.loss_type=ipo", "method.dpo.label_smoothing=0.1"])
    with pytest.raises(ConfigError, match="uses no reference model"):
        compose_config(["method=dpo", "data=prefs", "method.dpo.loss_type=simpo",
                        "method.dpo.precompute_ref_log_probs=true"])


def test_pairs_must_share_the_prompt():
    row = {"chosen_input_ids": [1, 2, 3, 4], "chosen_labels": [-100, -100, 3, 4], "rejected_input_ids": [1, 2, 5],
           "rejected_labels": [-100, -100, 5], "prompt_len": 2}
    check_shared_prompt(row, "train pair 0")
    with pytest.raises(DataError, match="train pair 7: chosen and rejected rows do not share the prompt"):
        check_shared_prompt(dict(row, rejected_input_ids=[1, 9, 5]), "train pair 7")
    with pytest.raises(DataError, match="train pair 7: prompt tokens of the rejected row are trained"):
        check_shared_prompt(dict(row, rejected_labels=[-100, 2, 5]), "train pair 7")
