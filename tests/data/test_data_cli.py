"""launcher data preview / dump, with the tokenizer injected (launcher.models.build is on main)."""
import json

import pytest

from launcher.data import cli as data_cli
from tests.data.helpers import char_tokenizer, write_dataset


@pytest.fixture
def overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(data_cli, "load_tokenizer", lambda model_cfg: char_tokenizer())
    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(4)]
    write_dataset(tmp_path / "data", "d", rows)
    return [f"data.dataset_dir={tmp_path / 'data'}", "data.datasets=[d]", "data.eval_datasets=[]",
            f"data.cache_dir={tmp_path / 'cache'}", "data.packing=true", "data.cutoff_len=64"]


def test_preview_marks_trained_text(overrides, capsys):
    assert data_cli.data_main(["preview", "-n", "2", *overrides]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>user\nQ0<|im_end|>\n<|im_start|>assistant\n[[A0<|im_end|>\n]]" in out
    assert out.count("--- sample") == 2
    assert "samples=4" in out and "dropped=0" in out and "trained_tokens=16" in out and "packing_fill=" in out


def test_preview_colors_on_request(overrides, capsys):
    assert data_cli.data_main(["preview", "--color", "always", *overrides]) == 0
    assert data_cli.GREEN + "A0" in capsys.readouterr().out


def test_dump_writes_packed_rows(overrides, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    assert data_cli.data_main(["dump", "--out", str(out), *overrides]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all({"input_ids", "labels", "position_ids", "segment_lengths"} <= set(r) for r in rows)
    assert sum(len(r["segment_lengths"]) for r in rows) == 4


def test_errors_are_one_line(overrides, capsys):
    assert data_cli.data_main(["preview", *overrides, "data.datasets=[nope]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'nope'") and err.count("\n") == 1
