"""launcher serve with videos and audio, a real HTTP server driven by the official openai client: a tiny
Qwen2-VL folder takes ``video_url`` parts (a data URL, a path under --image-root) as video spans and frames;
a tiny Qwen2-Audio folder takes ``input_audio`` parts (wav, mp3) as audio spans and features. Each model
refuses the other's parts, and bad or oversized media, with a 400 naming the part."""
from __future__ import annotations

import base64
import io
import math
import os
import struct
import wave
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("httpx")

from tests.after.test_serve_api import Server  # noqa: E402
from tests.conftest import SHARED_DEMO  # noqa: E402
from tests.vl.helpers import REPO, model_yaml, save_tiny_vl_folder, tokenizer_for, tiny_model, write_video  # noqa: E402

QUESTION = {"type": "text", "text": "What is it?"}


def wav_bytes(seconds: float, hz: float = 440.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * i / rate)))
                                 for i in range(int(seconds * rate))))
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}


def ask(server, model, content, **kw):
    c = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=180)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], temperature=0,
                                     max_tokens=4, seed=0, **kw)


def refused(server, model, content) -> dict:
    with pytest.raises(openai.BadRequestError) as info:
        ask(server, model, content)
    return info.value.body if isinstance(info.value.body, dict) else {}


def env(tmp) -> dict:
    """The server's environment; its temp folder (where request media are written) is ``tmp``."""
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TMPDIR=str(tmp))


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def vl_server(tmp_path_factory, media_root):
    folder = save_tiny_vl_folder(tmp_path_factory.mktemp("hf") / "tiny-qwen2-vl", weight_std=0.5)
    logs = tmp_path_factory.mktemp("serve")
    server = Server([str(folder), "--model-name", "vl", "--image-root", str(media_root), "--max-video-frames", "6"],
                    env(logs), logs / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory):
    from launcher.config.schema import parse_config
    from launcher.models.audio import save_audio_files

    folder = tmp_path_factory.mktemp("hf") / "tiny-qwen2-audio"
    tiny_model("tiny_qwen2_audio").save_pretrained(folder)
    tokenizer = tokenizer_for("tiny_qwen2_audio")
    tokenizer.save_pretrained(folder)
    save_audio_files(folder, parse_config({"model": model_yaml("tiny_qwen2_audio"), "data": {"datasets": ["x"]}}))
    logs = tmp_path_factory.mktemp("serve")
    server = Server([str(folder), "--model-name", "audio"], env(logs), logs / "server.log")
    yield server
    server.stop()


def test_videos_reach_a_vl_model_and_bad_ones_are_400s(vl_server, media_root, tmp_path):
    from launcher.data import video_settings
    from launcher.data.video import plan_video
    from tests.vl.helpers import vl_config

    clip = write_video(media_root / "clip.mp4", frames=4, size=(64, 48), fps=4)
    text_only = ask(vl_server, "vl", [QUESTION])
    inline = ask(vl_server, "vl", [video_part("data:video/mp4;base64," + b64(clip.read_bytes())), QUESTION])
    from launcher.models.vision import vision_info

    cfg = vl_config("tiny_qwen2_vl", tmp_path, ["x"])
    plan = plan_video(str(clip), video_settings(cfg, vision_info(cfg.model)), "test")
    # the video's tokens (as launcher chat --video counts them) plus vision start and end
    assert inline.usage.prompt_tokens == text_only.usage.prompt_tokens + plan.token_count(2) + 2
    by_path = ask(vl_server, "vl", [video_part(f"file://{clip}"), QUESTION])
    assert by_path.usage == inline.usage and by_path.choices[0].message.content == inline.choices[0].message.content

    long_clip = write_video(media_root / "long.mp4", frames=8, size=(64, 48), fps=4)
    cases = [
        (video_part("data:video/mp4;base64," + b64(b"\x89PNG not a video")), "invalid_video", "is not a video"),
        (video_part("data:video/ogg;base64,AAAA"), None, "data:video/mp4;base64"),
        (video_part("https://example.com/a.mp4"), "video_url_not_supported", "does not fetch URLs"),
        (video_part(str(tmp_path / "elsewhere.mp4")), "video_path_refused", "does not read that path"),
        (video_part(str(long_clip)), "video_too_large", "the video has 8 frames; this server decodes videos of at most 6"),
        (audio_part(wav_bytes(0.5)), "audio_not_supported", "this model has no audio tower"),
    ]
    for part, code, words in cases:
        body = refused(vl_server, "vl", [QUESTION, part])
        error = body.get("error", body)
        assert words in error["message"] and error["param"] == "messages[0].content[1]", error
        assert code is None or error["code"] == code, error
    served = list(Path(vl_server.log.name).parent.glob("launcher-serve-media-*"))
    assert len(served) == 1 and list(served[0].iterdir()) == []  # each request's files removed when it ended


def test_audio_reaches_an_audio_model_and_bad_clips_are_400s(audio_server):
    text_only = ask(audio_server, "audio", [QUESTION])
    one_second = ask(audio_server, "audio", [audio_part(wav_bytes(1.0)), QUESTION])
    # 1 s at 16 kHz: 100 feature frames, ((100 - 1) // 2 + 1 - 2) // 2 + 1 = 25 audio tokens, plus bos and eos
    assert one_second.usage.prompt_tokens == text_only.usage.prompt_tokens + 25 + 2
    mp3 = SHARED_DEMO / "mllm_demo_data" / "1.mp3"
    if mp3.is_file():  # LF's demo clip: 4.03 s, 101 tokens (launcher data preview prints the same)
        answer = ask(audio_server, "audio", [audio_part(mp3.read_bytes(), "mp3"), QUESTION])
        assert answer.usage.prompt_tokens == text_only.usage.prompt_tokens + 101 + 2
    cases = [
        (audio_part(wav_bytes(31.0)), "audio_too_long", "longer than the 30 s this model hears"),
        (audio_part(b"RIFF not really a wav file"), "invalid_audio", "is not wav audio"),
        (audio_part(wav_bytes(0.5), "flac"), None, "input_audio.format must be wav or mp3"),
        (video_part("data:video/mp4;base64,AAAA"), "video_not_supported", "this model has no vision tower"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "image_not_supported",
         "no vision tower"),
    ]
    for part, code, words in cases:
        body = refused(audio_server, "audio", [QUESTION, part])
        error = body.get("error", body)
        assert words in error["message"] and error["param"] == "messages[0].content[1]", error
        assert code is None or error["code"] == code, error
