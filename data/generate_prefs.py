"""Write the embedded preference set: short tasks (add, capitalize, reverse), each with a correct (chosen)
and a plausible wrong (rejected) answer, in LLaMA-Factory's alpaca ranking format (``ranking: true``).

Wrong answers are near misses, so a model must learn the rule to tell them apart: a sum off by 1-3, a word
capitalized only in part or left as it was, a reversal with two letters swapped or not reversed at all.
Deterministic: rerunning rewrites the same files.

    python data/generate_prefs.py
"""
import json
import random
import string
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make(rng: random.Random) -> dict:
    """One task row. Kept here, not imported from generate_tasks.py: the SFT tasks have other rules now,
    and wrong_answer below knows these three; the shipped prefs_*.json files are exactly what this writes."""
    kind = rng.choice(["upper", "reverse", "add"])
    if kind == "add":
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        return {"instruction": "Add.", "input": f"{a}+{b}", "output": str(a + b)}
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 5)))
    if kind == "upper":
        return {"instruction": "Capitalize.", "input": word, "output": word.upper()}
    return {"instruction": "Reverse.", "input": word, "output": word[::-1]}


def wrong_answer(row: dict, rng: random.Random) -> str:
    answer, given = row["output"], row["input"]
    if row["instruction"] == "Add.":
        return str(int(answer) + rng.choice([-3, -2, -1, 1, 2, 3]) if int(answer) > 3 else int(answer) + rng.randint(1, 3))
    if row["instruction"] == "Capitalize.":
        k = rng.randint(1, len(given) - 1)
        return rng.choice([given, given[:k].upper() + given[k:], given[:k] + given[k:].upper()])
    # Reverse: the input unchanged (when that differs), or the right answer with two neighbours swapped
    options = [given] if given != answer else []
    for _ in range(10):
        k = rng.randint(0, len(answer) - 2)
        swapped = answer[:k] + answer[k + 1] + answer[k] + answer[k + 2:]
        if swapped != answer:
            options.append(swapped)
            break
    return rng.choice(options) if options else answer[1:] + answer[0]


def pairs(rng: random.Random, n: int, seen: set) -> list[dict]:
    out = []
    while len(out) < n:
        row = make(rng)
        key = (row["instruction"], row["input"])
        rejected = wrong_answer(row, rng)
        if key in seen or rejected == row["output"]:
            continue
        seen.add(key)
        out.append({"instruction": row["instruction"], "input": row["input"], "chosen": row["output"],
                    "rejected": rejected})
    return out


def main() -> None:
    rng = random.Random(4321)
    seen: set = set()
    train = pairs(rng, 600, seen)
    held = pairs(rng, 60, seen)
    (HERE / "prefs_train.json").write_text(json.dumps(train, indent=0) + "\n")
    (HERE / "prefs_eval.json").write_text(json.dumps(held, indent=0) + "\n")


if __name__ == "__main__":
    main()
