"""Write the embedded vision-language demo: coloured shapes drawn by PIL, with checkable answers.

Each 56x56 image holds one large shape (circle, square or triangle, 36-52 px) of one of four colours on a
white background, at a random place; 56x56 is 4x4 patches, 4 image tokens for Qwen2-VL, so the demo trains
in minutes on 2 CPU cores. The question (one of a few wordings) asks for the shape's colour, answered in one
word only the picture gives away: red, green, blue or yellow. A model that ignores the image can be right at
most a quarter of the time; the held-out exact match above that is what the pixels taught it. (An earlier
version asked for colours, shapes and counts of up to three small shapes in 112 px images: the tiny
random-init tower learned the answer words but not to read shapes or counts within a demo's budget.)
The eval images come from other random draws.
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
SIDE = 56
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = ("What colour is the shape?", "Which colour is it?", "Name the shape's colour.")


def draw_image(rng: random.Random, colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    size = rng.randint(36, 52)
    x, y = rng.randint(0, SIDE - size), rng.randint(0, SIDE - size)
    for x, y, size in [(x, y, size)]:
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
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        path = f"{OUT.name}/{name}/{i:04d}.png"  # relative to the dataset dir (data/), as LLaMA-Factory reads it
        draw_image(rng, colour, shape).save(HERE / path, optimize=True)
        rows.append({"messages": [{"role": "user", "content": "<image>" + rng.choice(QUESTIONS)},
                                  {"role": "assistant", "content": colour}], "images": [path]})
    return rows


def make_prefs(rng: random.Random, rows: list) -> list:
    """Preference pairs on the same images: chosen = the right colour, rejected = another colour."""
    out = []
    for row in rows:
        answer = row["messages"][1]["content"]
        wrong = rng.choice([a for a in COLOURS if a != answer])
        out.append({"messages": [row["messages"][0]], "chosen": {"role": "assistant", "content": answer},
                    "rejected": {"role": "assistant", "content": wrong}, "images": row["images"]})
    return out


def write_rows(path: Path, rows: list) -> None:
    lines = ",\n".join(json.dumps(r) for r in rows)  # one row per line
    path.write_text(f"[\n{lines}\n]\n")
    print(f"wrote {len(rows)} rows to {path}")


def main() -> None:
    made = {}
    for split, count, seed in (("train", 400, 0), ("eval", 60, 1)):
        if (OUT / split).is_dir():
            for old in (OUT / split).glob("*.png"):
                old.unlink()
        (OUT / split).mkdir(parents=True, exist_ok=True)
        made[split] = make_split(random.Random(seed), split, count)
        write_rows(OUT / f"{split}.json", made[split])
    write_rows(OUT / "prefs_train.json", make_prefs(random.Random(2), made["train"]))
    write_rows(OUT / "prefs_eval.json", make_prefs(random.Random(3), made["eval"]))


if __name__ == "__main__":
    main()
