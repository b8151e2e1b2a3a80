"""Without a browser: every handler message in both languages, the dataset preview's data (the same function
``launcher data preview`` prints), its images read from the raw files under the dataset dir, and the chat's
image upload checks (kept under the run dir; refused for a text model).
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher.errors import DataError
from launcher.ui.i18n import LANGUAGES, MESSAGES, Note, language, message

UI_DIR = Path(__file__).resolve().parents[2] / "launcher" / "ui"


def fields(text: str) -> set:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_has_english_and_chinese_with_the_same_fields():
    for name, texts in MESSAGES.items():
        assert len(texts) == len(LANGUAGES) and all(t.strip() for t in texts), name
        assert fields(texts[0]) == fields(texts[1]), f"{name}: {texts}"
        chinese = texts[1].format(**{f: "" for f in fields(texts[1])})
        assert any("\u4e00" <= c <= "\u9fff" for c in chinese) or chinese == texts[0].format(
            **{f: "" for f in fields(texts[0])}), f"{name}: no Chinese in {texts[1]!r}"


def test_every_message_the_ui_names_exists():
    """Each Note("...") / message("...") in launcher/ui names a key of MESSAGES (a typo fails here, not in a
    handler), and every key is used."""
    used, kinds = set(), set()
    for path in UI_DIR.rglob("*.py"):  # the tabs too
        used |= set(re.findall(r"""(?:Note|message)\(\s*["']([a-z_]+)["']""", path.read_text()))
        kinds |= set(re.findall(r"""worded\(\s*["']([a-z]+)["']""", path.read_text()))
    assert used - set(MESSAGES) == set()
    # worded("state", ...) words states, phases, metrics, rank phases and plot series by their name: each such
    # key is used that way
    assert kinds == {"state", "phase", "metric", "rankphase", "series"}
    assert set(MESSAGES) - used - {k for k in MESSAGES if k.split("_")[0] in kinds and k != "state_count"} == set()


def test_messages_follow_the_language():
    assert language("zh-CN") == language("zh") == language("zh-TW") == "zh-CN"
    assert language("en-US") == language("") == language(None) == "en"
    assert message("error", "zh-CN", detail="x") == "错误：x"
    note = Note("submitted_slurm", job_id=12, run_dir="/r")
    assert str(note) == "submitted SLURM job 12: /r" and note.text("zh") == "已提交 SLURM 作业 12：/r"
    with pytest.raises(KeyError, match="no message 'nope'"):
        Note("nope")


def test_preview_never_shows_a_typed_secret(monkeypatch):
    """A W&B key typed as an override is refused by the preflight, and the page shows it nowhere (config,
    sbatch script, command, verdict); a secret in this process's environment neither."""
    from launcher.ui import actions

    monkeypatch.setenv("HF_TOKEN", "hf_envsecret42")
    p = actions.preview(["cluster=slurm_local", "+cluster.env.WANDB_API_KEY=wandb-typed-7f3a", "run.name=hf_envsecret42"])
    assert not p.ok and "secrets are never written" in p.error
    shown = "\n".join([p.error, p.config_yaml, p.plan, p.command] + [str(v) for v in p.verdict])
    assert "wandb-typed-7f3a" not in shown and "hf_envsecret42" not in shown
    assert "+cluster.env.WANDB_API_KEY=<WANDB_API_KEY>" in p.command and "run.name=<HF_TOKEN>" in p.command


# ------------------------------------------------------------------------------------------ data preview


def test_preview_samples_is_what_the_cli_prints(tmp_path, monkeypatch):
    """The page's samples and ``launcher data preview``'s text come from one function."""
    from launcher.data import cli as data_cli
    from tests.data.helpers import char_tokenizer, write_dataset

    monkeypatch.setattr(data_cli, "load_tokenizer", lambda model_cfg: char_tokenizer())
    write_dataset(tmp_path / "data", "d", [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(4)])
    overrides = [f"data.dataset_dir={tmp_path / 'data'}", "data.datasets=[d]", "data.eval_datasets=[]",
                 f"data.cache_dir={tmp_path / 'cache'}", "data.packing=true", "data.cutoff_len=64"]
    cfg, samples, stats = data_cli.load_preview(overrides, 2)
    assert [s.index for s in samples] == [0, 1] and stats["samples"] == 4
    first = samples[0]
    assert [text for text, trained in first.spans if trained] == ["A0<|im_end|>\n"]
    assert "".join(text for text, _ in first.spans) == "<|im_start|>user\nQ0<|im_end|>\n<|im_start|>assistant\nA0<|im_end|>\n"
    assert first.trained == len("A0") + 2 and first.images == []  # A, 0, <|im_end|>, newline
    assert data_cli.format_preview(samples, stats, color=False).startswith(
        f"--- sample 0: {first.tokens} tokens, {first.trained} trained\n<|im_start|>user\nQ0")


def write_png(path: Path, size=(40, 30), color=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_images_of_a_packed_row_go_with_their_samples_and_come_from_the_dataset_dir(tmp_path):
    """A VL row names its images (relative to the dataset dir, or absolute); the preview splits a packed row's
    images over its samples and reads each file, refusing one outside the dataset dir."""
    from launcher.data.cli import preview_samples
    from launcher.ui.actions import preview_images
    from tests.data.helpers import char_tokenizer

    tok = char_tokenizer()
    data = tmp_path / "data"
    write_png(data / "imgs" / "a.png", (640, 480))
    write_png(data / "imgs" / "b.png")
    write_png(tmp_path / "outside.png")
    ids = tok("ab", add_special_tokens=False)["input_ids"] + tok("cde", add_special_tokens=False)["input_ids"]
    row = {"input_ids": ids, "labels": [-100, ids[1], -100, ids[3], ids[4]], "segment_lengths": [2, 3],
           "images": ["imgs/a.png", str(data / "imgs" / "b.png"), str(tmp_path / "outside.png")],
           "segment_images": [1, 2]}
    samples = preview_samples(SimpleNamespace(train=[row], stats={}), tok, 5)
    assert [s.images for s in samples] == [["imgs/a.png"], [str(data / "imgs" / "b.png"), str(tmp_path / "outside.png")]]
    assert samples[0].spans == [("a", False), ("b", True)] and samples[1].trained == 2
    assert samples[0].image_tokens == []  # no vision tower in this bundle: counts are the VL port's to give
    shown = preview_images(samples, data)
    assert [note.name for _, note in shown] == ["data_image_caption_unknown", "data_image_caption_unknown",
                                                "data_image_missing"]
    first, note = shown[0]
    assert max(first.size) == 384 and note.params["size"] == "640x480"  # shown small, its own size named
    assert "outside.png: not under the dataset dir" in shown[2][1].text("zh-CN")
    sample = samples[0]
    sample.image_tokens = [66]
    assert preview_images([sample], data)[0][1].text() == "sample 0, image 0: 66 image tokens, 640x480"


# ------------------------------------------------------------------------------------------ chat images


def test_uploaded_image_is_kept_under_the_run_dir_and_a_non_image_refused(tmp_path):
    from launcher.ui.after import keep_image

    upload = write_png(tmp_path / "upload" / "photo.png")
    kept = Path(keep_image(tmp_path / "run", str(upload)))
    assert kept.parent == tmp_path / "run" / "chat" / "images" and kept.read_bytes() == upload.read_bytes()
    assert keep_image(tmp_path / "run", str(upload)) == str(kept)  # the same picture is kept once
    bad = tmp_path / "upload" / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(DataError, match="notes.png"):
        keep_image(tmp_path / "run", str(bad))


def test_a_text_run_does_not_see_images(tmp_path):
    from launcher.config.compose import compose_config
    from launcher.launch.rundir import make_run_dir, write_run_config
    from launcher.ui.after import run_sees_images

    run_dir = make_run_dir(tmp_path, "text")
    write_run_config(run_dir, compose_config([f"run.output_root={tmp_path}"]))
    assert run_sees_images(run_dir) is False


def test_what_a_run_takes_and_where_uploads_are_kept(tmp_path):
    """Images and videos for a VL run, audio for an audio run, nothing for a text run (from the config alone);
    an uploaded video or clip is copied under RUN_DIR/chat/videos|audios/ once, by its content."""
    from launcher.config.compose import compose_config
    from launcher.launch.rundir import make_run_dir, write_run_config
    from launcher.ui.after import keep_upload, run_takes

    takes = {}
    for model in ("tiny_qwen2", "tiny_qwen2_vl", "tiny_qwen2_audio"):
        run_dir = make_run_dir(tmp_path, model)
        write_run_config(run_dir, compose_config([f"model={model}", f"run.output_root={tmp_path}"], check=False))
        takes[model] = run_takes(run_dir)
    assert takes == {"tiny_qwen2": set(), "tiny_qwen2_vl": {"image", "video"}, "tiny_qwen2_audio": {"audio"}}
    clip = tmp_path / "upload" / "Clip.MP4"
    clip.parent.mkdir()
    clip.write_bytes(b"frames")
    kept = Path(keep_upload(tmp_path / "run", str(clip), "video"))
    assert kept.parent == tmp_path / "run" / "chat" / "videos" and kept.suffix == ".mp4"
    assert keep_upload(tmp_path / "run", str(clip), "video") == str(kept) and kept.read_bytes() == b"frames"
    assert Path(keep_upload(tmp_path / "run", str(clip), "audio")).parent.name == "audios"
