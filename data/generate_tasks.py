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


def make(rng: random.Random) -> dict:
    kind = rng.choice(["upper", "reverse", "add"])
    if kind == "add":
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        return {"instruction": "Add.", "input": f"{a}+{b}", "output": str(a + b)}
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 5)))
    if kind == "upper":
        return {"instruction": "Capitalize.", "input": word, "output": word.upper()}
    return {"instruction": "Reverse.", "input": word, "output": word[::-1]}


def main() -> None:
    rng = random.Random(1234)
    seen, train, held = set(), [], []
    while len(train) < 3000:
        row = make(rng)
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            train.append(row)
    while len(held) < 120:
        row = make(rng)
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            held.append(row)
    (HERE / "tasks_train.json").write_text(json.dumps(train, indent=0) + "\n")
    (HERE / "tasks_eval.json").write_text(json.dumps(held, indent=0) + "\n")


if __name__ == "__main__":
    main()
