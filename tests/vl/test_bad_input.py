"""Bad VL input: one line naming the row, the file and what to do (in build_datasets and, where it can see
the first rows, in the preflight before anything is queued)."""
import json

import pytest

from launcher.data import build_datasets
from launcher.errors import DataError
from launcher.checks.data import check_datasets
from launcher.checks.problems import Problems
from tests.vl.helpers import tokenizer_for, vl_config, write_images

ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images", "videos": "videos"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def write(folder, rows):
    (folder / "d.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"d": dict(ENTRY, file_name="d.json")}))


def row(text="<image>What is it?", images=("img0.png",), answer="A picture.", **extra):
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}],
            "images": list(images), **extra}


def expect(folder, match, model="tiny_qwen2_vl", preflight=True, **data):
    cfg = vl_config(model, folder, ["d"], **data)
    with pytest.raises(DataError, match=match) as info:
        build_datasets(cfg, tokenizer_for(model if model.endswith("vl") else "tiny_qwen2_vl"))
    message = str(info.value)
    assert "\n" not in message and "d.json: row 0" in message
    if preflight:
        problems = Problems()
        check_datasets(problems, cfg)
        assert any(match.split(".*")[0] in p for p in problems.errors) or any(
            __import__("re").search(match, p) for p in problems.errors), problems.errors
    return message


def test_missing_file(tmp_path):
    write(tmp_path, [row(images=["nope.png"])])
    expect(tmp_path, r"image file not found: .*nope\.png")


def test_not_an_image(tmp_path):
    (tmp_path / "img0.png").write_bytes(b"\x89PNG but not really")
    write(tmp_path, [row()])
    expect(tmp_path, r"img0\.png is not an image PIL can read")


def test_placeholder_count(tmp_path):
    write_images(tmp_path, [(56, 56)])
    write(tmp_path, [row(text="<image><image>Both?")])
    expect(tmp_path, r"2 <image> placeholder\(s\) in the text but 1 images")


def test_video_column(tmp_path):  # videos are read (tests/vl/test_video.py); this file is no video
    (tmp_path / "v.mp4").write_bytes(b"x")
    write(tmp_path, [row(text="<video>What happens?", images=[], videos=["v.mp4"])])
    expect(tmp_path, r"v\.mp4 is not a video FFmpeg can read")


def test_images_for_a_text_model(tmp_path):
    write_images(tmp_path, [(56, 56)])
    write(tmp_path, [row()])
    cfg_model = "tiny_qwen2_qwentok"
    from launcher.config.schema import parse_config
    from tests.vl.helpers import model_yaml

    cfg = parse_config({"model": model_yaml(cfg_model), "data": {"dataset_dir": str(tmp_path), "datasets": ["d"],
                                                                  "use_cache": False}})
    with pytest.raises(DataError, match=r"row 0: the row has images but model 'tiny-qwen2-qwentok' has no vision"):
        build_datasets(cfg, tokenizer_for("tiny_qwen2_vl"))
    problems = Problems()
    check_datasets(problems, cfg)
    assert any("has no vision tower" in p for p in problems.errors)


def test_template_without_image_slot(tmp_path):
    write_images(tmp_path, [(56, 56)])
    write(tmp_path, [row()])
    expect(tmp_path, r"data.template=qwen has no image slot; use data.template=qwen2_vl", template="qwen")


def test_image_larger_than_cutoff(tmp_path):
    write_images(tmp_path, [(800, 800)])  # 768x768 cap -> 27x27 merged... about 750 tokens
    write(tmp_path, [row()])
    message = expect(tmp_path, r"image 0 \(.*img0\.png\) resizes to \d+ tokens .* but data.cutoff_len is 256",
                     cutoff_len=256)
    assert "lower data.image_max_pixels or raise data.cutoff_len" in message


def test_truncation_never_cuts_an_image(tmp_path):
    """A span that fits alone but not with the text: refused (row and option named), or dropped and counted."""
    write_images(tmp_path, [(280, 280)])  # 100 image tokens
    long_prompt = "Look:" + " word" * 100 + " <image>?"  # the cut keeps the start: it lands in the image
    write(tmp_path, [row(text=long_prompt, answer="Short."), row(text="<image>Hi?")])
    expect(tmp_path, r"data.cutoff_len=160 cuts through an image's tokens; raise data.cutoff_len.*data.lenient=true",
           preflight=False, cutoff_len=160)
    bundle = build_datasets(vl_config("tiny_qwen2_vl", tmp_path, ["d"], cutoff_len=160, lenient=True),
                            tokenizer_for("tiny_qwen2_vl"))
    assert bundle.stats["dropped_image_cut"] == 1 and bundle.stats["rows"] == 1
    batch = bundle.collate(bundle.train)  # the surviving row's image tokens match its pixels
    pad = bundle.vision.ids["image_pad"]
    assert int((batch["input_ids"] == pad).sum()) == int(batch["image_grid_thw"].prod(-1).sum()) // 4


def test_labels_never_on_vision_tokens(tmp_path):
    write_images(tmp_path, [(56, 56), (84, 84)])
    write(tmp_path, [row(text="<image>and<image>", images=["img0.png", "img1.png"])])
    bundle = build_datasets(vl_config("tiny_qwen2_vl", tmp_path, ["d"], train_on_prompt=True),
                            tokenizer_for("tiny_qwen2_vl"))
    r = bundle.train[0]
    vision_ids = set(bundle.vision.ids.values())
    assert any(t in vision_ids for t in r["input_ids"])
    assert all(y == -100 for t, y in zip(r["input_ids"], r["labels"]) if t in vision_ids)
    assert sum(y != -100 for y in r["labels"]) > sum(t not in vision_ids for t in r["input_ids"]) // 2  # prompt trained
