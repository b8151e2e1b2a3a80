"""Formats (alpaca, sharegpt, OpenAI messages, preference, pretraining), file types, mixing and splits."""
import json

import pytest

from launcher.data import build_datasets
from launcher.data.mixing import mix, split_eval
from launcher.data.tokenize import IGNORE_INDEX
from tests.data.helpers import char_tokenizer, make_config, write_dataset

ROWS = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(10)]


def build(tmp_path, names, **data):
    return build_datasets(make_config(tmp_path, names, use_cache=False, **data), char_tokenizer())


def decoded(row):
    return char_tokenizer().decode(row["input_ids"])


def test_alpaca_with_system_history_and_input(tmp_path):
    rows = [{"instruction": "Sum", "input": "1 2", "output": "3", "system": "Math.", "history": [["Hi", "Hello"]]}]
    write_dataset(tmp_path, "d", rows, {"columns": {"prompt": "instruction", "query": "input", "response": "output",
                                                   "system": "system", "history": "history"}})
    bundle = build(tmp_path, ["d"])
    assert decoded(bundle.train[0]) == ("<|im_start|>system\nMath.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nSum\n1 2<|im_end|>\n"
                                        "<|im_start|>assistant\n3<|im_end|>\n")
    assert bundle.stats["trained_tokens"] == len("Hello") + 2 + len("3") + 2  # each answer + <|im_end|> + "\n"


def test_sharegpt_openai_tags(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                          {"role": "assistant", "content": "a"}]}]
    write_dataset(tmp_path, "d", rows, {"formatting": "sharegpt", "columns": {"messages": "messages"},
                                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                                 "assistant_tag": "assistant", "system_tag": "system"}})
    bundle = build(tmp_path, ["d"])
    assert decoded(bundle.train[0]).startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu")


@pytest.mark.parametrize("formatting", ["alpaca", "sharegpt"])
def test_preference_rows_share_the_prompt(tmp_path, formatting):
    if formatting == "alpaca":
        rows = [{"instruction": "Pick", "chosen": "good", "rejected": "bad!"}]
        entry = {"ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}
    else:
        rows = [{"conversations": [{"from": "human", "value": "Pick"}], "chosen": {"from": "gpt", "value": "good"},
                 "rejected": {"from": "gpt", "value": "bad!"}}]
        entry = {"ranking": True, "formatting": "sharegpt",
                 "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
    write_dataset(tmp_path, "d", rows, entry)
    bundle = build(tmp_path, ["d"], packing=True)
    assert bundle.kind == "preference" and not bundle.packed
    [row] = bundle.train
    n = row["prompt_len"]
    assert row["chosen_input_ids"][:n] == row["rejected_input_ids"][:n]
    assert row["chosen_labels"][:n] == [IGNORE_INDEX] * n
    tok = char_tokenizer()
    assert tok.decode(row["chosen_input_ids"][n:]) == "good<|im_end|>\n"
    assert row["rejected_labels"][n:] == row["rejected_input_ids"][n:]
    batch = bundle.collate(bundle.train)
    assert batch["input_ids"].shape[0] == 2  # chosen rows, then rejected rows


def test_pretraining_text(tmp_path):
    write_dataset(tmp_path, "wiki", "first line of text\nsecond\n", {"columns": {"prompt": "text"}}, file_name="wiki.txt")
    bundle = build(tmp_path, ["wiki"])
    assert bundle.kind == "pt"
    assert [decoded(r) for r in bundle.train] == ["first line of text<|im_end|>", "second<|im_end|>"]
    assert all(r["labels"] == r["input_ids"] for r in bundle.train)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet", "arrow", "folder"])
def test_file_types(tmp_path, suffix):
    import datasets

    table = datasets.Dataset.from_list(ROWS)
    target = tmp_path / f"d.{suffix}"
    if suffix == "jsonl":
        target.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix == "csv":
        table.to_csv(str(target), index=False)
    elif suffix == "parquet":
        table.to_parquet(str(target))
    elif suffix == "arrow":
        import pyarrow as pa

        with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_file(sink, table.data.table.schema) as writer:
            writer.write_table(table.data.table)
    else:
        target.mkdir()
        (target / "part1.json").write_text(json.dumps(ROWS[:4]))
        (target / "part2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[4:]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": target.name}}))
    bundle = build(tmp_path, ["d"])
    assert bundle.stats["samples"] == 10
    assert "Q0" in decoded(bundle.train[0]) and "A9" in decoded(bundle.train[-1])


def test_caps_mixing_and_validation_split(tmp_path):
    write_dataset(tmp_path, "a", ROWS)
    write_dataset(tmp_path, "b", [{"instruction": f"B{i}", "input": "", "output": "b"} for i in range(10)])
    bundle = build(tmp_path, [{"name": "a", "max_samples": 3}, "b"], max_samples=5)
    assert bundle.stats["samples"] == 8
    bundle = build(tmp_path, ["a"], val_size=0.2)
    assert bundle.stats["samples"] == 8 and len(bundle.eval_samples) == 2 and len(bundle.eval) == 2
    assert bundle.eval_samples[0]["messages"][-1]["role"] == "assistant"
    bundle = build(tmp_path, ["a"], eval_datasets=["b"])
    assert bundle.stats["samples"] == 10 and len(bundle.eval) == 10
    mixed = mix([list("aaaaaaaa"), list("bb")], [1.0, 1.0], "interleave", seed=0)
    assert set(mixed) <= {"a", "b"} and mixed.count("b") <= 2
    assert mix([["x"], ["y"]], [None, None], "concat", 0) == ["x", "y"]
    train, held = split_eval(list(range(10)), 3, seed=1)
    assert len(held) == 3 and sorted(train + held) == list(range(10))


def test_dataset_info_yaml_adds_entries(tmp_path):
    write_dataset(tmp_path, "a", ROWS)
    (tmp_path / "dataset_info.yaml").write_text("extra:\n  file_name: a.json\n")
    assert build(tmp_path, ["extra"]).stats["samples"] == 10
