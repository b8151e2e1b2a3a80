"""Videos and audio in the page: the data preview of LF's mllm_video_demo (a strip of each video's sampled
frames, its frame and token counts) and mllm_audio_demo (a player of what the model hears, its seconds,
frames and tokens), and a chat with a video, in a real headless Chromium against the real ``launcher ui``.

LF's demo files come from ../shared/datasets/llamafactory-demo (tests/conftest.py's SHARED_DEMO; the UI server
gets it as LLAMAFACTORY_DATA); the tests skip where it is missing.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import SHARED_DEMO
from tests.ui.conftest import screenshot
from tests.ui.test_browser import choose, expect, fill, open_tab
from tests.ui.test_page_extras import TINY, VL, chat_logs, send_and_read_trained_turn, train_locally

pytestmark = [pytest.mark.skipif(not (SHARED_DEMO / "mllm_demo_data" / "1.mp4").is_file(),
                                 reason=f"LF's demo data is missing ({SHARED_DEMO})"),
              pytest.mark.skipif(not VL, reason="no VL support in this build")]
CLIPS = SHARED_DEMO / "mllm_demo_data"


def preview(page, model: str, data: str) -> None:
    choose(page, "group-model", model)
    choose(page, "group-data", data)
    page.locator("#data-preview-btn").click(timeout=120_000)  # picking a group recomposes the form first
    expect()(page.locator("#data-stats")).to_contain_text("3 sample(s) shown", timeout=240_000)


def test_preview_shows_video_frames_and_audio_players(ui_server, page):
    """The counts are the ones ``launcher data preview`` prints for these files (its CLI output: 1.mp4 is 20
    frames of 243 sampled, 840 video tokens; 1.mp3 is 4.03 s, 404 frames, 101 tokens)."""
    url, _ = ui_server
    page.goto(url)
    preview(page, "tiny_qwen2_vl", "mllm_video_demo")
    strips = page.locator("#data-videos img")
    expect()(strips).to_have_count(1, timeout=30_000)  # one image, a row of sampled frames per video
    notes = page.locator("#data-video-notes")
    expect()(notes).to_contain_text(
        "[1] sample 0, video 0: 20 frames sampled of 243 (7 shown), 341x192, grid 10x14x24, 840 video tokens")
    expect()(notes).to_contain_text("[3] sample 2, video 0: ")
    expect()(page.locator("#data-preview")).to_contain_text("<|video_pad|>*840")
    expect()(page.locator("#data-stats")).to_contain_text("videos=3")
    strips.first.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('#data-videos img')?.naturalHeight > 0", timeout=60_000)
    width = strips.first.evaluate("img => img.naturalWidth")
    height = strips.first.evaluate("img => img.naturalHeight")
    assert height == 3 * 96 + 2 * 8 and 5 * 96 < width <= 8 * 4 * 96  # small frames, not full ones
    assert not page.locator("#data-audio-0").is_visible()
    screenshot(page, "compose-data-video")

    preview(page, "tiny_qwen2_audio", "mllm_audio_demo")
    expect()(page.locator("#data-videos")).to_be_hidden()
    expect()(page.locator("#data-video-notes")).to_be_hidden()
    first = page.locator("#data-audio-0")
    expect()(first).to_contain_text("sample 0, audio 0: 4.03 s, 404 frames, 101 audio tokens (1.mp3)")
    expect()(page.locator("#data-audio-2")).to_contain_text("audio 0: ")
    expect()(page.locator("#data-audio-3")).to_be_hidden()
    expect()(page.locator("#data-preview")).to_contain_text("<|AUDIO|>*101")
    # the player plays a WAV the page serves (what the model hears: mono 16 kHz), not the dataset's file
    src = page.locator("#data-audio-0 audio").first.get_attribute("src") if page.locator(
        "#data-audio-0 audio").count() else None
    if src is None:  # Gradio draws a waveform; its <audio> may be created on play
        src = page.evaluate("() => document.querySelector('#data-audio-0').innerHTML.match(/file=[^\"]+wav/)?.[0]")
    assert src and src.endswith(".wav"), src
    screenshot(page, "compose-data-audio")


def test_chat_with_a_video(ui_server, page):
    """A tiny Qwen2-VL run trained on mllm_video_demo answers a message with a video; audio is refused for it."""
    url, root = ui_server
    run_dir = train_locally(page, url, root, "vl-video", {"model": "tiny_qwen2_vl", "data": "mllm_video_demo"},
                            TINY + " train.micro_batch_size=1")
    open_tab(page, "Chat")
    rel = str(run_dir.relative_to(root))
    choose(page, "chat-run", rel)
    page.locator("#chat-audio input[type=file]").set_input_files(str(CLIPS / "2.wav"))
    fill(page, "chat-message", "What can you hear?")
    page.locator("#send-btn").click()
    expect()(page.locator("#chat-status")).to_contain_text(
        f"{rel}: this run's model (tiny-qwen2-vl) has no audio tower", timeout=60_000)
    assert not (run_dir / "chat" / "audios").exists() and chat_logs(run_dir) == []
    page.locator("#chat-audio button[aria-label='Clear']").first.click()

    video = CLIPS / "4.mp4"
    page.locator("#chat-video input[type=file]").set_input_files(str(video))
    turn = send_and_read_trained_turn(page, run_dir, "What is in this video?")
    kept = Path(turn["videos"][0])
    assert kept.parent == run_dir / "chat" / "videos" and kept.read_bytes() == video.read_bytes()
    assert re.search(r"<\|vision_start\|>(<\|video_pad\|>)+<\|vision_end\|>What is in this video\?", turn["prompt"])
    expect()(page.locator("#chat-trained video")).to_have_count(1)  # the video shown in the conversation
    screenshot(page, "chat-video")

