"""A JSON list is read row by row from a window of its text (launcher.data.readers._json_list_rows): the rows
equal json.load's for any window size (values cut at the window's edge, numbers that go on past it, multi-byte
characters split between chunks), and a malformed file is named with its line, at any window size."""
import json

import pytest

from launcher.data.readers import _json_list_rows, read_file_items
from launcher.errors import DataError

ROWS = ([{"instruction": "x" * (i % 50), "n": i, "text": "é😀 \n 中文"} for i in range(300)]
        + [1, 2.5, -3e-7, 123456789012, True, None, "s", [1, [2, {}]], {}])
WINDOWS = [1, 2, 3, 7, 64, 1000, 1 << 24]


@pytest.mark.parametrize("indent", [None, 1])
def test_rows_equal_json_load_for_any_window(tmp_path, indent):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=indent, ensure_ascii=False), encoding="utf-8")
    for window in WINDOWS:
        assert list(_json_list_rows(path, window)) == json.loads(path.read_text()), window


def test_a_bom_is_dropped(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes("\ufeff".encode() + b'[{"a": 1}, {"b": 2}]')
    assert list(_json_list_rows(path, 2)) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("text,message", [
    ("[\n{\"i\": \"a\"},\n{\"i\": \"a\" \"o\": \"b\"}\n]", r"d\.json:3: malformed JSON \(Expecting ',' delimiter\); fix"),
    ("[\n1,\n2\n3]", r"d\.json:4: malformed JSON \(Expecting ',' delimiter\)"),
    ("[1,]", r"d\.json:1: malformed JSON \(Expecting value\)"),
    ("[{\"a\": 1}", r"d\.json:1: malformed JSON"),
    ("{\"a\": 1}\n{\"b\": 2}", r"d\.json:2: malformed JSON \(Extra data\); this looks like JSON Lines"),
    ("{\"a\": 1}", r"d\.json: expected a JSON list of rows, got a JSON dict"),
    (" \n ", r"d\.json: the file is empty"),
    ("[1] [2]", r"d\.json:1: malformed JSON \(Extra data\)"),
])
def test_malformed_files_are_named_with_their_line(tmp_path, text, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    for window in (1, 2, 1 << 24):
        with pytest.raises(DataError, match=message):
            list(_json_list_rows(path, window))


def test_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[{"a": "ok"}, {"a": "\xff"}]')
    with pytest.raises(DataError, match=r"d\.json: not UTF-8 text \(byte 21\)"):
        list(_json_list_rows(path, 4))


def test_rows_are_located_by_index(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert [(where, raw) for where, _, raw in read_file_items(path)] == [(f"{path}: row 0", False),
                                                                          (f"{path}: row 1", False)]
