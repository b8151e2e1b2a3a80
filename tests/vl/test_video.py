"""Videos (LLaMA-Factory's ``videos`` column and ``<video>``) for Qwen2-VL, Qwen2.5-VL and Qwen3-VL: token rows
equal LF 0.9.5's on mllm_video_demo (fixtures/make_lf_video_reference.py), frames become the patches the
processors make, Qwen2.5-VL's positions follow the video's time, a cut at cutoff_len never splits a video, and
bad videos are one line naming the row (in build_datasets and in the dry run)."""
import json

import pytest
import torch

from launcher.checks.data import check_datasets
from launcher.checks.problems import Problems
from launcher.data import build_datasets
from launcher.errors import DataError
from tests.vl.helpers import lf_demo_dir, run_length_decoded, tokenizer_for, vl_config, write_video

DEMO = lf_demo_dir()
VIDEO_FIXTURE = __import__("pathlib").Path(__file__).with_name("fixtures") / "lf_mllm_video_demo.json"
ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "videos": "videos"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def write(folder, rows):
    (folder / "d.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"d": dict(ENTRY, file_name="d.json")}))


def turn(text, answer="It moves."):
    return [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]


@pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (../shared/datasets)")
@pytest.mark.parametrize("model,template", [("tiny_qwen2_vl", "qwen2_vl"), ("tiny_qwen2_5_vl", "qwen2_vl"),
                                            ("tiny_qwen3_vl", "qwen3_vl")])
def test_mllm_video_demo_equals_llamafactory(model, template):
    expected = json.loads(VIDEO_FIXTURE.read_text())["templates"][template]
    bundle = build_datasets(vl_config(model, DEMO, ["mllm_video_demo"], cutoff_len=8192), tokenizer_for(model))
    assert len(bundle.train) == len(expected) == 3
    for k, (ours, lf) in enumerate(zip(bundle.train, expected)):
        assert ours["input_ids"] == run_length_decoded(lf["input_ids"]), f"row {k}"
        assert ours["labels"] == run_length_decoded(lf["labels"]), f"row {k}"
        assert ours["video_grid_thw"] == lf["video_grid_thw"], f"row {k}"
        assert ours["video_second_per_grid"] == pytest.approx(lf["second_per_grid_ts"], rel=1e-9), f"row {k}"
    assert bundle.stats["videos"] == 3
    merge = 4
    assert bundle.stats["video_tokens"] == sum(t * h * w // merge for r in expected for t, h, w in r["video_grid_thw"])


def test_frames_become_the_processors_patches(tmp_path):
    """Two equal frames make the patches the image processor makes of that frame (it repeats an image over the
    temporal patch), so the layout (temporal, merge groups) is the model's."""
    from PIL import Image

    from launcher.data.video import frame_tensor, patchify_frames, plan_video
    from launcher.data import vision_data

    cfg = vl_config("tiny_qwen2_vl", tmp_path, ["d"])
    vision, _ = vision_data(cfg, tokenizer_for("tiny_qwen2_vl"))
    image = Image.new("RGB", (112, 56))
    image.putdata([((x * 7) % 256, (y * 5) % 256, (x * y) % 256) for y in range(56) for x in range(112)])
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for k in range(2):
        image.save(frames_dir / f"{k:03d}.png")
    plan = plan_video(str(frames_dir), vision.video, "row 0")
    assert plan.grid == (1, 4, 8) and plan.seconds_per_grid == pytest.approx(1.0)  # 2 frames at video_fps 2
    ours = patchify_frames(frame_tensor([image, image], plan, vision.video), 14, 2, 2)
    theirs = vision.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=2e-2)  # the same pixels up to the two resamplers' rounding


def test_qwen2_5_positions_follow_time_and_batches_train(tmp_path):
    """A video at 4 fps sampled at 2 fps: Qwen2.5-VL's temporal positions step by tokens_per_second *
    second_per_grid; the batch carries the video's patches and runs through the model."""
    from launcher.training.loss import backbone_hidden
    from tests.vl.helpers import tiny_model

    write_video(tmp_path / "v.mp4", frames=16, fps=4)  # 4 s: 8 frames sampled, 4 temporal patches of 1 s
    write(tmp_path, [{"messages": turn("<video>What happens?"), "videos": ["v.mp4"]}])
    bundle = build_datasets(vl_config("tiny_qwen2_5_vl", tmp_path, ["d"]), tokenizer_for("tiny_qwen2_5_vl"))
    row = bundle.train[0]
    assert row["video_grid_thw"] == [[4, 4, 4]] and row["video_second_per_grid"] == [pytest.approx(1.0)]
    batch = bundle.collate_for("sdpa")([row])
    assert batch["pixel_values_videos"].shape == (64, 3 * 2 * 14 * 14)
    assert batch["second_per_grid_ts"].tolist() == [pytest.approx(1.0)]
    ids = batch["input_ids"][0]
    video = (ids == bundle.vision.ids["video_pad"]).nonzero().flatten()
    assert batch["mm_token_type_ids"][0, video].eq(2).all()
    time = batch["position_ids"][0, 0, video].view(4, 4)[:, 0] - batch["position_ids"][0, 0, video[0]]
    step = tiny_model("tiny_qwen2_5_vl").config.vision_config.tokens_per_second
    assert time.tolist() == [0, step, 2 * step, 3 * step]
    model = tiny_model("tiny_qwen2_5_vl")
    hidden = backbone_hidden(model, batch["input_ids"], batch["attention_mask"], batch["position_ids"], batch)
    assert torch.isfinite(hidden).all()
    # packed after a text sample, the video's sample keeps its own positions (restarting at 0)
    write(tmp_path, [{"messages": turn("Hello there?", "Hi.")},
                     {"messages": turn("<video>What happens?"), "videos": ["v.mp4"]}])
    packed = build_datasets(vl_config("tiny_qwen2_5_vl", tmp_path, ["d"], packing=True),
                            tokenizer_for("tiny_qwen2_5_vl"))
    (packed_row,) = packed.train
    assert sorted(packed_row["segment_videos"]) == [0, 1] and packed_row["videos"] == row["videos"]
    positions = packed.collate_for("sdpa")([packed_row])["position_ids"]
    k = packed_row["segment_videos"].index(1)
    start, n = sum(packed_row["segment_lengths"][:k]), packed_row["segment_lengths"][k]
    assert n == len(row["input_ids"])
    assert torch.equal(positions[1:, 0, start: start + n], batch["position_ids"][:, 0])


def test_cut_never_splits_a_video(tmp_path):
    """Strict: refused, naming the video and what to change; lenient: the row shortened before the video (the
    first turn kept, the video dropped from the row)."""
    write_video(tmp_path / "v.mp4", frames=8, fps=4)
    first = turn("Say hi." + " word" * 20, "Hi.")
    write(tmp_path, [{"messages": first + turn("<video>What happens?"), "videos": ["v.mp4"]}])
    with pytest.raises(DataError, match=r"d.json: row 0: data.cutoff_len=60 cuts through a video's tokens; raise"
                                        r" data.cutoff_len, lower data.video_max_pixels or data.video_maxlen.*"
                                        r"\(video 0: .*v\.mp4, 10 tokens from token \d+\)"):
        build_datasets(vl_config("tiny_qwen2_vl", tmp_path, ["d"], cutoff_len=60), tokenizer_for("tiny_qwen2_vl"))
    bundle = build_datasets(vl_config("tiny_qwen2_vl", tmp_path, ["d"], cutoff_len=60, lenient=True),
                            tokenizer_for("tiny_qwen2_vl"))
    row = bundle.train[0]
    assert row.get("videos", []) == [] and bundle.vision.ids["vision_start"] not in row["input_ids"]
    assert tokenizer_for("tiny_qwen2_vl").decode([t for t in row["labels"] if t >= 0]).startswith("Hi.")
    assert bundle.stats["dropped_image_cut"] == 1 and bundle.stats["rows"] == 1


def expect_refused(folder, match, **data):
    cfg = vl_config("tiny_qwen2_vl", folder, ["d"], **data)
    with pytest.raises(DataError, match=match) as info:
        build_datasets(cfg, tokenizer_for("tiny_qwen2_vl"))
    assert "\n" not in str(info.value) and "d.json: row 0" in str(info.value)
    problems = Problems()
    check_datasets(problems, cfg)  # the dry run says the same, before anything is queued
    assert any(__import__("re").search(match, p) for p in problems.errors), problems.errors


@pytest.mark.parametrize("case, match", [
    ("missing", r"video file not found: .*nope\.mp4; paths are relative to data.dataset_dir"),
    ("unreadable", r"bad\.mp4 is not a video FFmpeg can read"),
    ("no frames", r"video .*empty\.avi has no frames"),
    ("too long", r"video 0 \(.*v\.mp4\) takes at least \d+ tokens \(8 frames, grid \[4, 4, 4\]\) but"
                 r" data.cutoff_len is 16; lower data.video_maxlen"),
    ("placeholders", r"2 <video> placeholder\(s\) in the text but 1 videos"),
    ("audio", r"the row has audios but model .* has no audio tower; use a Qwen2-Audio model"),
])
def test_bad_video_is_one_line_naming_the_row(tmp_path, case, match):
    write_video(tmp_path / "v.mp4", frames=16, fps=4)
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but not really")
    write_video(tmp_path / "empty.avi", frames=0)
    video = {"missing": "nope.mp4", "unreadable": "bad.mp4", "no frames": "empty.avi"}.get(case, "v.mp4")
    text = "<video><video>Both?" if case == "placeholders" else "<video>What happens?"
    sample = {"messages": turn(text), "videos": [video]}
    if case == "audio":
        sample = {"messages": turn("<audio>What is it?"), "audios": ["v.mp4"]}
        entry = dict(ENTRY, columns={"messages": "messages", "audios": "audios"})
        (tmp_path / "d.json").write_text(json.dumps([sample]))
        (tmp_path / "dataset_info.json").write_text(json.dumps({"d": dict(entry, file_name="d.json")}))
    else:
        write(tmp_path, [sample])
    expect_refused(tmp_path, match, cutoff_len=16 if case == "too long" else 1024)


@pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (../shared/datasets)")
def test_preview_shows_frames_and_video_tokens(capsys):
    from launcher.data.cli import data_main

    assert data_main(["preview", "-n", "1", "--color", "never", "data=mllm_video_demo", "model=tiny_qwen2_vl",
                      f"data.dataset_dir={DEMO}", "data.use_cache=false"]) == 0
    out = capsys.readouterr().out
    assert ("video 0: 20 frames of 243 at 341x192, 1.023 s per temporal patch, grid 10x14x24, 840 video tokens in"
            " 1 span(s) tokens [14, 856)") in out
    assert "<|vision_start|><|video_pad|>*840<|vision_end|>Why is this video funny?" in out
    assert "videos=3  video_tokens=2136" in out


@pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (../shared/datasets)")
@pytest.mark.parametrize("method", ["sft_full", "lora"])
def test_trains_on_mllm_video_demo(tmp_path, method):
    """A few steps of full and LoRA SFT on LF's video demo (tiny Qwen2-VL, 4 small frames per video): the
    loss falls, and the saved model reloads."""
    from recipes.sft import SFTRecipe
    from tests.recipe_runs import run_recipe

    overrides = ["model=tiny_qwen2_vl", "data=mllm_video_demo", f"data.dataset_dir={DEMO}", "data.use_cache=false",
                 "data.video_maxlen=4", f"data.video_max_pixels={112 * 112}", f"method={method}",
                 "method.lr=1e-2", "train.micro_batch_size=3", "train.grad_accum=1", "train.max_steps=3",
                 "train.warmup_steps=0", "train.lr_scheduler=constant", "train.eval_every=0", "train.log_every=1",
                 "train.exact_match_samples=0", "model.freeze_vision_tower=false"]
    recipe, run_dir, summary = run_recipe(SFTRecipe, tmp_path / "outputs", overrides)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert (run_dir / "model" / "video_preprocessor_config.json").is_file()
    if method == "lora":
        return
    # chat with a video (what ``launcher chat RUN_DIR --video PATH`` / ``/video PATH`` do)
    from launcher.inference.chat_session import ChatSession, GenerationOptions
    from launcher.inference.prompts import prompt_renderer

    video = str(DEMO / "mllm_demo_data" / "4.mp4")
    session = ChatSession(recipe.model.eval(), recipe.tokenizer, prompt_renderer(recipe.tokenizer, recipe.cfg),
                          torch.device("cpu"), GenerationOptions(max_new_tokens=3), vision=recipe.data.vision)
    session.attach_video(video)
    answer, prompt = session.reply("What happens?")
    assert prompt.count("<|vision_start|>") == 1 and "<|video_pad|>" in prompt and session.videos == [video]
    with pytest.raises(DataError, match="/video: video file not found"):
        session.attach_video(str(DEMO / "missing.mp4"))


def test_frame_list_video_as_lf_writes_it(tmp_path):
    """LF's already sampled frames (a list of image paths in ``videos``): taken at video_fps, an odd count
    padded with the last frame, decoded per batch like a file."""
    from tests.vl.helpers import write_images

    frames = write_images(tmp_path, [(84, 56)] * 3)
    write(tmp_path, [{"messages": turn("<video>What changes?"), "videos": [frames]}])
    bundle = build_datasets(vl_config("tiny_qwen2_vl", tmp_path, ["d"]), tokenizer_for("tiny_qwen2_vl"))
    row = bundle.train[0]
    assert row["video_grid_thw"] == [[2, 4, 6]] and row["video_second_per_grid"] == [pytest.approx(1.0)]
    assert row["input_ids"].count(bundle.vision.ids["video_pad"]) == 2 * 4 * 6 // 4
    batch = bundle.collate_for("sdpa")([row])
    assert batch["pixel_values_videos"].shape == (2 * 4 * 6, 3 * 2 * 14 * 14)
