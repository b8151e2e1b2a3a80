"""Bad input gives one DataError line that names the file/row and says what to do."""
import json
import time

import pytest

from launcher.errors import DataError
from launcher.data import build_datasets
from tests.data.helpers import char_tokenizer, make_config, write_dataset

GOOD = {"instruction": "Hi", "input": "", "output": "Hello"}


def build(tmp_path, name="d", **data):
    return build_datasets(make_config(tmp_path, [name], use_cache=False, **data), char_tokenizer())


def expect(tmp_path, match, name="d", **data):
    with pytest.raises(DataError, match=match) as info:
        build(tmp_path, name, **data)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_malformed_json_names_file_and_line(tmp_path):
    write_dataset(tmp_path, "d", '[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"}\n]')
    msg = expect(tmp_path, r"d\.json:3: malformed JSON")
    assert "fix" in msg


def test_malformed_jsonl_names_line(tmp_path):
    write_dataset(tmp_path, "d", json.dumps(GOOD) + "\n" + '{"instruction": oops}\n', file_name="d.jsonl")
    expect(tmp_path, r"d\.jsonl:2: malformed JSON line .*fix or remove the line")


def test_missing_column(tmp_path):
    write_dataset(tmp_path, "d", [GOOD, {"instruction": "Hi"}])
    expect(tmp_path, r"d\.json: row 1: missing column 'output'")


def test_roles_out_of_order(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}]
    write_dataset(tmp_path, "d", rows, {"formatting": "sharegpt"})
    expect(tmp_path, r"row 0: roles out of order at turn 1: got user, expected assistant or function_call")


def test_unknown_role(tmp_path):
    rows = [{"conversations": [{"from": "robot", "value": "a"}]}]
    write_dataset(tmp_path, "d", rows, {"formatting": "sharegpt"})
    expect(tmp_path, r"unknown role 'robot'.*map yours with tags")


def test_empty_turn(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "  "}]}]
    write_dataset(tmp_path, "d", rows, {"formatting": "sharegpt"})
    expect(tmp_path, r"row 0: turn 1 \(assistant\) is empty")


def test_wrong_image_count(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    rows = [{"messages": [{"role": "user", "content": "<image><image>What?"}, {"role": "assistant", "content": "A cat."}],
             "images": ["a.jpg"]}]
    entry = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    write_dataset(tmp_path, "d", rows, entry)
    expect(tmp_path, r"row 0: 2 <image> placeholder\(s\) in the text but 1 images")
    rows[0]["messages"][0]["content"] = "<image>What?"
    rows[0]["images"] = ["missing.jpg"]
    write_dataset(tmp_path, "d", rows, entry)
    expect(tmp_path, r"image file not found: .*missing\.jpg")
    rows[0]["images"] = ["a.jpg"]
    write_dataset(tmp_path, "d", rows, entry)
    # the default model is a text model: images are refused, not silently ignored (tests/vl has the VL cases)
    expect(tmp_path, r"row 0: the row has images but model 'tiny-qwen2' has no vision tower")


def test_unknown_dataset_lists_names(tmp_path):
    write_dataset(tmp_path, "alpha", [GOOD])
    write_dataset(tmp_path, "beta", [GOOD])
    expect(tmp_path, r"unknown dataset 'gamma' .*datasets there: alpha, beta", name="gamma")


def test_unreadable_files(tmp_path):
    write_dataset(tmp_path, "d", [GOOD])
    (tmp_path / "d.json").unlink()
    expect(tmp_path, r"d\.json: dataset file not found")
    (tmp_path / "d.json").write_bytes(b'[{"instruction": "\xff\xfe"}]')
    expect(tmp_path, r"d\.json: not UTF-8 text")
    (tmp_path / "d.json").write_text(json.dumps([GOOD]))
    (tmp_path / "d.json").chmod(0)
    try:
        if (tmp_path / "d.json").stat().st_mode and not __import__("os").access(tmp_path / "d.json", 4):
            expect(tmp_path, r"d\.json: unreadable")
    finally:
        (tmp_path / "d.json").chmod(0o644)


def test_hub_dataset_fails_fast_offline(tmp_path, monkeypatch):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"hub": {"hf_hub_url": "someone/some_data"}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    expect(tmp_path, r"dataset 'hub': hf_hub_url 'someone/some_data' needs the Hugging Face Hub.*file_name", name="hub")
    assert time.monotonic() - start < 5


def test_no_trained_token_is_an_error_or_a_counted_drop(tmp_path):
    # a long prompt and a long-ish answer in a tiny budget: LLaMA-Factory's split leaves the answer 0 tokens
    write_dataset(tmp_path, "d", [GOOD, {"instruction": "x" * 300, "input": "", "output": "short"}])
    expect(tmp_path, r"d\.json: row 1: no trained token left .*data.lenient=true", cutoff_len=10)
    bundle = build(tmp_path, lenient=True, cutoff_len=10)
    assert bundle.stats["dropped"] == 1 and len(bundle.train) == 1


def test_empty_answer_is_an_error(tmp_path):
    write_dataset(tmp_path, "d", [GOOD, {"instruction": "Hi", "input": "", "output": ""}])
    expect(tmp_path, r"row 1: turn 1 \(assistant\) is empty")
