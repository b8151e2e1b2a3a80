"""Data at scale: worker processes give the same rows as one process, bad rows deep in a file are reported
with file and line (or skipped and counted), the whole-file check preflight uses, and the memory-mapped store."""
import json

import numpy as np
import pytest

from launcher.data import build_datasets
from launcher.data.registry import load_registry
from launcher.data.validate import check_dataset
from launcher.errors import DataError
from tests.data.helpers import REPO, char_tokenizer, make_config, write_dataset


def _jsonl(rows) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def _rows(n):
    return [{"instruction": f"Q{i} " + "x" * (i % 37), "input": "", "output": f"A{i}"} for i in range(n)]


def _all(rows):
    return [rows[i] for i in range(len(rows))] if rows else []


@pytest.mark.parametrize("packing", [False, True])
def test_workers_give_the_rows_of_one_process(tmp_path, packing):
    options = dict(cutoff_len=64, packing=packing, use_cache=False, val_size=0.1, max_samples=450,
                   preprocess_batch_size=7)  # batch edges, the cap and the held-out split all inside batches
    data = REPO / "data"
    one = build_datasets(make_config(data, ["tasks"], num_proc=1, **options), char_tokenizer())
    two = build_datasets(make_config(data, ["tasks"], num_proc=2, **options), char_tokenizer())
    assert _all(one.train) == _all(two.train) and _all(one.eval) == _all(two.eval)
    assert one.eval_samples == two.eval_samples and one.stats == two.stats
    assert one.stats["samples"] + one.stats["eval_samples"] == 450


def test_rows_are_memory_mapped(tmp_path):
    write_dataset(tmp_path, "d", _rows(50))
    bundle = build_datasets(make_config(tmp_path, ["d"], cutoff_len=64, cache_dir=str(tmp_path / "cache")),
                            char_tokenizer())
    assert isinstance(bundle.train.tokens.input_ids, np.memmap)
    row = bundle.train[3]
    assert isinstance(row["input_ids"], list) and isinstance(row["input_ids"][0], int)
    assert len(bundle.train) == 50 and len(bundle.train[10:20]) == 10


def test_bad_row_deep_in_a_big_file_named_from_a_worker(tmp_path):
    rows = _rows(6000)
    rows[4321] = '{"instruction": "Q", "output": '  # line 4322: cut off
    rows[5000] = {"instruction": "Q"}  # line 5001: no answer
    (tmp_path / "big.jsonl").write_text(_jsonl(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"big": {"file_name": "big.jsonl"}}))
    cfg = make_config(tmp_path, ["big"], cutoff_len=64, use_cache=False, num_proc=2, preprocess_batch_size=500)
    with pytest.raises(DataError, match=r"big\.jsonl:4322: malformed JSON line") as err:
        build_datasets(cfg, char_tokenizer())
    # the other worker's report is kept, not lost
    assert "big.jsonl:5001: missing column 'output'" in str(err.value) and "1 more bad row" in str(err.value)


def test_lenient_skips_and_counts_bad_rows(tmp_path):
    rows = _rows(3000)
    rows[2500] = "not json"
    rows[2600] = {"instruction": "Q"}
    (tmp_path / "big.jsonl").write_text(_jsonl(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"big": {"file_name": "big.jsonl"}}))
    cfg = make_config(tmp_path, ["big"], cutoff_len=64, use_cache=False, num_proc=2, preprocess_batch_size=256,
                      lenient=True)
    bundle = build_datasets(cfg, char_tokenizer())
    assert bundle.stats["skipped_invalid"] == 2 and bundle.stats["samples"] == 2998


def _check(folder, name):
    return check_dataset(load_registry(folder)[name])


def test_whole_file_check_finds_bad_rows_anywhere(tmp_path):
    rows = _rows(5000)
    rows[4990] = "{oops"
    (tmp_path / "a.jsonl").write_text(_jsonl(rows))
    alpaca = _rows(4000)
    del alpaca[3999]["output"]
    write_dataset(tmp_path, "b", alpaca)
    write_dataset(tmp_path, "empty", [])
    prefs = [{"instruction": f"Q{i}", "input": "", "chosen": f"A{i}", "rejected": f"B{i}"} for i in range(3000)]
    prefs[2999]["chosen"] = "  "
    write_dataset(tmp_path, "p", prefs, entry={"ranking": True, "columns": {"prompt": "instruction", "query": "input",
                                                                             "chosen": "chosen", "rejected": "rejected"}})
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    info["a"] = {"file_name": "a.jsonl"}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))

    a = _check(tmp_path, "a")
    assert (a.rows, a.bad) == (5000, 1) and "a.jsonl:4991: malformed JSON line" in a.errors[0]
    assert "b.json: row 3999: missing column 'output'" in _check(tmp_path, "b").summary("b")
    assert "no rows" in _check(tmp_path, "empty").summary("empty")
    assert "row 2999: the chosen answer is empty" in _check(tmp_path, "p").summary("p")
    assert _check(tmp_path, "b").rows == 4000 and not check_dataset(load_registry(REPO / "data")["tasks"]).bad


def test_preflight_reads_the_whole_file(tmp_path):
    from launcher.config.schema import parse_config
    from launcher.checks.data import check_datasets
    from launcher.checks.problems import Problems

    rows = _rows(2000)
    rows[1999] = {"instruction": "Q", "output": ""}
    write_dataset(tmp_path, "d", rows)
    problems = Problems()
    check_datasets(problems, parse_config({"data": {"dataset_dir": str(tmp_path), "datasets": ["d"]}}))
    assert len(problems.errors) == 1 and "d.json: row 1999: turn 1 (assistant) is empty" in problems.errors[0]
    lenient = Problems()
    check_datasets(lenient, parse_config({"data": {"dataset_dir": str(tmp_path), "datasets": ["d"], "lenient": True}}))
    assert not lenient.errors and "skips 1 of 2000 rows" in lenient.warnings[0]


def _build_and_report(cfg, queue):
    bundle = build_datasets(cfg, char_tokenizer())
    queue.put((bundle.stats["cache_hit"], [bundle.train[i] for i in range(len(bundle.train))]))


def test_two_processes_one_build(tmp_path):
    """Ranks starting together: one builds under the lock, the other waits and maps the same store."""
    from multiprocessing import get_context

    write_dataset(tmp_path, "d", _rows(400))
    cfg = make_config(tmp_path, ["d"], cutoff_len=64, packing=True, cache_dir=str(tmp_path / "cache"), num_proc=2)
    ctx = get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_and_report, args=(cfg, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(hit for hit, _ in results) == [False, True]
    assert results[0][1] == results[1][1] and len(results[0][1]) > 0
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [build_datasets(cfg, char_tokenizer()).stats["cache_key"]]
