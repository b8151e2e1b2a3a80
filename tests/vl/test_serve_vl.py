"""launcher serve over a tiny Qwen2-VL folder, driven by the official openai client: image parts (a data URL,
a server path under --image-root) reach the model as vision spans and pixels; bad images are 400s naming the
part. Paths outside the root and the other limits: test_serve_limits.py."""
from __future__ import annotations

import base64
import io

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("httpx")



def png(colour, side=56) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buf, format="PNG")
    return buf.getvalue()


def data_url(colour) -> str:
    return "data:image/png;base64," + base64.b64encode(png(colour)).decode()


@pytest.fixture(scope="module")
def image_root(vl_serve):
    return vl_serve[1]


@pytest.fixture(scope="module")
def vl_server(vl_serve):
    """The session's server over a tiny Qwen2-VL folder (tests/conftest.py, shared with test_serve_limits.py)."""
    return vl_serve[0]


def ask(server, content):
    c = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)
    return c.chat.completions.create(model="vl", messages=[{"role": "user", "content": content}], temperature=0,
                                     max_tokens=6, seed=0)


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_images_reach_the_model(vl_server, image_root):
    question = {"type": "text", "text": "What colour is it?"}
    text_only = ask(vl_server, [question])
    red = ask(vl_server, [image_part(data_url((220, 30, 30))), question])
    # a 56x56 image is a 4x4 patch grid, 4 image tokens after the 2x2 merge, plus vision start and end
    assert red.usage.prompt_tokens == text_only.usage.prompt_tokens + 4 + 2
    path = image_root / "blue.png"
    path.write_bytes(png((40, 70, 220)))
    blue = ask(vl_server, [image_part(str(path)), question])
    again = ask(vl_server, [image_part(f"file://{path}"), question])
    assert blue.usage.prompt_tokens == red.usage.prompt_tokens
    assert again.choices[0].message.content == blue.choices[0].message.content  # same pixels, same greedy answer
    # the pixels are used: the same prompt with a different picture is answered differently by this model
    assert blue.choices[0].message.content != red.choices[0].message.content, (blue, red)
    # streamed, with the image
    c = openai.OpenAI(base_url=vl_server.base + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = c.chat.completions.create(model="vl", stream=True, temperature=0, max_tokens=6, seed=0,
                                       messages=[{"role": "user", "content": [image_part(str(path)), question]}])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == blue.choices[0].message.content


@pytest.mark.parametrize("url, words", [
    ("data:image/png;base64,@@@", "does not decode"),
    ("https://example.com/cat.png", "does not fetch URLs"),
    ("/no/such/file.png", "does not read that path"),
    ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not an image this server reads"),
])
def test_bad_images_are_400s_naming_the_part(vl_server, url, words):
    with pytest.raises(openai.BadRequestError) as info:
        ask(vl_server, [image_part(url), {"type": "text", "text": "hi"}])
    assert words in str(info.value)
