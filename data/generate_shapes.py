"""Write the embedded vision-language demo: coloured shapes drawn by PIL, with checkable answers.

Each 112x112 image holds one to three shapes of one kind and one colour on a white background, at random
places and sizes. Three questions, answered in one word that only the picture gives away:
"What colour are the shapes?" (red, green, blue, yellow), "What shape are they?" (circle, square, triangle),
"How many shapes are there?" (one, two, three). The eval images are drawn from other random draws.
Preference pairs (prefs_*.json) ask the same questions about the same images: chosen = the right answer,
rejected = a wrong one of the same kind.
Deterministic: rerunning rewrites the same files (PNG without timestamps).

    python data/generate_shapes.py
"""
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
OUT = HERE / "vl_shapes"
SIDE = 112
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("one", "two", "three")
QUESTIONS = {"colour": "What colour are the shapes?", "shape": "What shape are they?",
             "count": "How many shapes are there?"}


def draw_image(rng: random.Random, colour: str, shape: str, count: int) -> Image.Image:
    image = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    boxes = []
    while len(boxes) < count:
        size = rng.randint(22, 34)
        x, y = rng.randint(2, SIDE - size - 2), rng.randint(2, SIDE - size - 2)
        if any(x < bx + bs + 4 and bx < x + size + 4 and y < by + bs + 4 and by < y + size + 4 for bx, by, bs in boxes):
            continue  # shapes never touch, so they can be counted
        boxes.append((x, y, size))
    for x, y, size in boxes:
        if shape == "circle":
            pen.ellipse([x, y, x + size, y + size], fill=COLOURS[colour])
        elif shape == "square":
            pen.rectangle([x, y, x + size, y + size], fill=COLOURS[colour])
        else:
            pen.polygon([(x + size / 2, y), (x, y + size), (x + size, y + size)], fill=COLOURS[colour])
    return image


def make_split(rng: random.Random, name: str, count: int) -> list:
    rows = []
    for i in range(count):
        colour, shape, n = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.randint(1, 3)
        path = f"{OUT.name}/{name}/{i:04d}.png"  # relative to the dataset dir (data/), as LLaMA-Factory reads it
        draw_image(rng, colour, shape, n).save(HERE / path, optimize=True)
        kind = rng.choice(list(QUESTIONS))
        answer = {"colour": colour, "shape": shape, "count": NUMBERS[n - 1]}[kind]
        rows.append({"messages": [{"role": "user", "content": "<image>" + QUESTIONS[kind]},
                                  {"role": "assistant", "content": answer}], "images": [path]})
    return rows


ANSWERS = {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(NUMBERS)}


def make_prefs(rng: random.Random, rows: list) -> list:
    """Preference pairs on the same images: chosen = the right answer, rejected = a wrong one of the same kind."""
    out = []
    for row in rows:
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        kind = next(k for k, q in QUESTIONS.items() if question.endswith(q))
        wrong = rng.choice([a for a in ANSWERS[kind] if a != answer])
        out.append({"messages": [row["messages"][0]], "chosen": {"role": "assistant", "content": answer},
                    "rejected": {"role": "assistant", "content": wrong}, "images": row["images"]})
    return out


def write_rows(path: Path, rows: list) -> None:
    lines = ",\n".join(json.dumps(r) for r in rows)  # one row per line
    path.write_text(f"[\n{lines}\n]\n")
    print(f"wrote {len(rows)} rows to {path}")


def main() -> None:
    made = {}
    for split, count, seed in (("train", 600, 0), ("eval", 60, 1)):
        (OUT / split).mkdir(parents=True, exist_ok=True)
        made[split] = make_split(random.Random(seed), split, count)
        write_rows(OUT / f"{split}.json", made[split])
    write_rows(OUT / "prefs_train.json", make_prefs(random.Random(2), made["train"]))
    write_rows(OUT / "prefs_eval.json", make_prefs(random.Random(3), made["eval"]))


if __name__ == "__main__":
    main()
