"""Write the embedded default dataset: short instruction tasks with checkable answers (alpaca format).

Random letter strings (not words), so a model has to learn each rule rather than recall answers; the eval
split uses strings never seen in training. Deterministic: rerunning rewrites the same files.

    python data/generate_tasks.py
"""
import json
import random
import string
from pathlib import Path

HERE = Path(__file__).resolve().parent


def word(rng: random.Random, low: int = 3, high: int = 6) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(low, high)))


def make(rng: random.Random) -> dict:
    """One row of one of five rules; each answer depends on the input, so it cannot be memorized. Each answer is
    one character read from a fixed place of the input (its first or last character), mapped by a fixed table:
    rules a 0.8M-parameter model learns in a couple of thousand steps (capitalizing a whole word, a
    per-position copy, it did not)."""
    kind = rng.choice(["parity", "first", "last", "next", "upper"])
    if kind == "parity":
        n = rng.randint(0, 99999)
        return {"instruction": "Even or odd?", "input": str(n), "output": "even" if n % 2 == 0 else "odd"}
    w = word(rng)
    if kind == "first":
        return {"instruction": "First letter.", "input": w, "output": w[0]}
    if kind == "last":
        return {"instruction": "Last letter.", "input": w, "output": w[-1]}
    if kind == "next":
        w = w[:-1] + rng.choice(string.ascii_lowercase[:-1])  # never ends in z
        return {"instruction": "Letter after the last one.", "input": w, "output": chr(ord(w[-1]) + 1)}
    return {"instruction": "Last letter, capitalized.", "input": w, "output": w[-1].upper()}


def draw(rng: random.Random, count: int, seen: set) -> list:
    """``count`` rows whose (instruction, input) is not in ``seen`` (which grows), so splits never overlap."""
    rows = []
    while len(rows) < count:
        row = make(rng)
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


TRAIN_ROWS = 30000
"""Enough that one epoch never repeats a row: the loss can only fall by learning the rules."""
EVAL_ROWS = 120


def dump(rows: list) -> str:
    """A JSON array with one row per line (compact; diffs stay readable)."""
    return "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n"


def main() -> None:
    rng = random.Random(1234)
    seen: set = set()
    train = draw(rng, TRAIN_ROWS, seen)
    held = draw(rng, EVAL_ROWS, seen)
    (HERE / "tasks_train.json").write_text(dump(train))
    (HERE / "tasks_eval.json").write_text(dump(held))


if __name__ == "__main__":
    main()
