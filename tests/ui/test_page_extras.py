"""The page's dataset preview, its messages in Chinese after the language switch, and images in the chat, in
a real headless Chromium against the real ``launcher ui`` (local runs: no SLURM needed).

The VL chat test trains a tiny Qwen2-VL run and sends it a picture; it runs where the VL port is importable
(``launcher.models.vision``) and skips elsewhere.
"""
from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

from tests.ui.conftest import REPO_ROOT, screenshot
from tests.ui.test_browser import choose, expect, fill, open_tab, row, textbox

TINY = "train.exact_match_samples=0 train.log_every=1 train.eval_every=0"
FINISH_S = 300
CHAT_S = 300
VL = importlib.util.find_spec("launcher.models.vision") is not None


def switch_language(page, name: str) -> None:
    """Gradio's own language switch: the footer's Settings, then Language."""
    page.locator("footer").get_by_text(re.compile("Settings|设置")).first.click()
    page.locator("input[aria-label=Language], input[aria-label='语言']").first.click()
    page.get_by_role("option", name=re.compile(re.escape(name))).click()
    page.locator("h2:has(.url) + button").click()  # the settings panel's close button


def test_data_preview_marks_trained_text(ui_server, page):
    """The Compose tab's data preview shows what ``launcher data preview`` prints: the first samples of the
    chosen data tokenized, the trained text highlighted and nothing else."""
    from launcher.data.cli import load_preview

    url, _ = ui_server
    page.goto(url)
    fill(page, "data-n", "2")
    page.locator("#data-preview-btn").click()
    expect()(page.locator("#data-stats")).to_contain_text("2 sample(s) shown", timeout=180_000)
    _, samples, stats = load_preview([], 2)  # the default data, from the same cache the page filled
    expect()(page.locator("#data-stats")).to_contain_text(f"samples={stats['samples']}")
    highlighted = page.locator("#data-preview .token.highlighted .text")
    trained = [text for s in samples for text, is_trained in s.spans if is_trained]
    expect()(highlighted).to_have_count(len(trained))
    assert [t.strip() for t in highlighted.all_inner_texts()] == [t.strip() for t in trained]
    heads = page.locator("#data-preview .text.unlabeled", has_text=re.compile("^── sample"))
    assert heads.all_inner_texts() == [f"── sample {s.index}: {s.tokens} tokens, {s.trained} trained ──"
                                       for s in samples]
    screenshot(page, "compose-data")


def test_handler_messages_follow_the_language_switch(ui_server, page):
    """After switching the page to Chinese, a bad override's refusal is worded in Chinese (the schema's own
    message after it), nothing is queued; switching back gives English again."""
    url, root = ui_server
    page.goto(url)
    page.wait_for_selector("#group-cluster")
    fill(page, "overrides", TINY + " train.max_stepz=3")
    before = set(root.rglob("config.yaml"))
    switch_language(page, "简体中文")
    expect()(page.locator("#submit-btn")).to_contain_text("提交")
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile(r"^错误：unknown config key 'train\.max_stepz'"),
                                                            timeout=60_000)
    expect()(textbox(page, "verdict")).to_have_value(re.compile("未提交任何作业"))
    page.locator("#preview-btn").click()  # the preview clears the verdict: its answer has arrived then
    expect()(textbox(page, "verdict")).to_have_value("", timeout=60_000)
    expect()(textbox(page, "compose-status")).to_have_value(re.compile(r"^错误：unknown config key"))
    screenshot(page, "compose-zh-error")
    switch_language(page, "English")
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile(r"^error: unknown config key"), timeout=60_000)
    expect()(textbox(page, "verdict")).to_have_value(re.compile("nothing was queued"))
    time.sleep(1)
    assert set(root.rglob("config.yaml")) == before


def train_locally(page, url: str, root: Path, name: str, groups: dict, overrides: str) -> Path:
    """Compose and submit a tiny local run from the page; wait on the Runs tab until it is COMPLETED."""
    page.goto(url)
    page.wait_for_selector("#group-cluster")
    for group, value in groups.items():
        choose(page, f"group-{group}", value)
    fill(page, "field-train-max_steps", "2")
    fill(page, "overrides", overrides)
    fill(page, "run-name", name)
    page.locator("#submit-btn").click()
    expect()(textbox(page, "compose-status")).to_have_value(re.compile("started locally"), timeout=120_000)
    run_dir = next(root.glob(f"{name}/*/*/config.yaml")).parent
    open_tab(page, "Runs")
    rel = str(run_dir.relative_to(root))
    try:
        expect()(row(page, rel)).to_contain_text("COMPLETED", timeout=FINISH_S * 1000)
    except AssertionError:
        log = (run_dir / "run.log").read_text(errors="replace")[-3000:] if (run_dir / "run.log").exists() else ""
        raise AssertionError(f"{rel} did not complete:\n{log}") from None
    return run_dir


def chat_logs(run_dir: Path) -> list:
    return [json.loads(line) for p in (run_dir / "chat").glob("ui-*.jsonl") for line in p.read_text().splitlines()]


def send_and_read_trained_turn(page, run_dir: Path, message: str) -> dict:
    """Send ``message`` in the Chat tab, wait for the trained model's answer on the page, and return its turn from
    the run's chat log (written once the answer is done)."""
    fill(page, "chat-message", message)
    page.locator("#send-btn").click()
    bot = page.locator("#chat-trained [data-testid='bot']").last
    expect()(bot).not_to_have_text(re.compile(r"^\s*…?\s*$"), timeout=CHAT_S * 1000)
    deadline, turns = time.time() + CHAT_S, []
    while time.time() < deadline and not any(t["model"] == "trained" for t in turns):
        time.sleep(0.5)
        turns = chat_logs(run_dir)
    return next(t for t in turns if t["model"] == "trained")


def picture(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "picture.png"
    Image.new("RGB", (56, 56), (30, 160, 60)).save(path)
    return path


def test_image_upload_is_refused_for_a_text_run(ui_server, page, tmp_path):
    url, root = ui_server
    run_dir = train_locally(page, url, root, "text-chat", {}, TINY)
    open_tab(page, "Chat")
    rel = str(run_dir.relative_to(root))
    choose(page, "chat-run", rel)
    page.locator("#chat-image input[type=file]").set_input_files(str(picture(tmp_path)))
    expect()(page.locator("#chat-image img")).to_be_visible(timeout=30_000)
    fill(page, "chat-message", "what colour is this?")
    page.locator("#send-btn").click()
    expect()(page.locator("#chat-status")).to_contain_text(
        f"{rel}: this run's model (tiny-qwen2) has no vision tower", timeout=60_000)
    assert textbox(page, "chat-message").input_value() == "what colour is this?"  # kept, to send without it
    assert not (run_dir / "chat" / "images").exists() and chat_logs(run_dir) == []
    screenshot(page, "chat-image-refused")


@pytest.mark.skipif(not VL, reason="no VL support in this build (launcher.models.vision comes with the VL port)")
def test_vl_run_sees_an_uploaded_image_and_the_preview_shows_images(ui_server, page):
    url, root = ui_server
    page.goto(url)
    choose(page, "group-model", "tiny_qwen2_vl")
    choose(page, "group-data", "vl_shapes")
    page.locator("#data-preview-btn").click()
    expect()(page.locator("#data-stats")).to_contain_text("sample(s) shown", timeout=180_000)
    gallery = page.locator("#data-images img")
    expect()(gallery.first).to_be_visible(timeout=30_000)
    expect()(page.locator("#data-images")).to_contain_text(re.compile(r"image 0: \d+ image tokens"))
    screenshot(page, "compose-data-vl")

    run_dir = train_locally(page, url, root, "vl-chat", {"model": "tiny_qwen2_vl", "data": "vl_shapes"}, TINY)
    open_tab(page, "Chat")
    rel = str(run_dir.relative_to(root))
    choose(page, "chat-run", rel)
    image = sorted((REPO_ROOT / "data" / "vl_shapes" / "eval").glob("*.png"))[0]
    page.locator("#chat-image input[type=file]").set_input_files(str(image))
    turn = send_and_read_trained_turn(page, run_dir, "What colour is the shape?")
    kept = Path(turn["images"][0])
    assert kept.parent == run_dir / "chat" / "images" and kept.read_bytes() == image.read_bytes()
    assert "<|image_pad|>" in turn["prompt"]  # the picture went into the prompt as image tokens
    screenshot(page, "chat-vl")
