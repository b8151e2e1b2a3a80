"""launcher serve's limits without a server: where a context length is found, which image paths are read."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from launcher.data.vision import InlineImage
from launcher.serve.engine import context_length
from launcher.serve.images import ImagePolicy
from launcher.serve.openai_protocol import APIError, ImagePath


def model(config, generation=None):
    from transformers import GenerationConfig

    return SimpleNamespace(config=config, generation_config=GenerationConfig(**(generation or {})))


def test_context_length_is_found_wherever_the_model_keeps_it():
    tok = SimpleNamespace(model_max_length=int(1e30))  # the "unset" sentinel of tokenizers
    vl = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=4096))
    assert context_length(model(vl), tok) == (4096, "config.text_config.max_position_embeddings")
    assert context_length(model(SimpleNamespace(n_positions=1024)), tok) == (1024, "config.n_positions")
    # the smallest declared limit wins: the tokenizer's, or a generation config that sets max_length
    assert context_length(model(vl), SimpleNamespace(model_max_length=2048))[0] == 2048
    assert context_length(model(vl, {"max_length": 1000}), tok) == (1000, "generation_config.max_length")
    # GenerationConfig's default max_length (20) is not the model's
    assert context_length(model(SimpleNamespace()), tok) == (None, "")
    # --context-length replaces the soft limits (tokenizer, generation config), never passes the config's
    soft = SimpleNamespace(model_max_length=2048)
    assert context_length(model(vl), soft, 3000) == (3000, "--context-length")
    assert context_length(model(vl), soft, 9000) == (4096, "config.text_config.max_position_embeddings")
    assert context_length(model(SimpleNamespace()), tok, 512) == (512, "--context-length")


@pytest.fixture
def root(tmp_path):
    from PIL import Image

    folder = tmp_path / "root"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "ok.png")
    os.mkfifo(folder / "fifo")
    (folder / "link").symlink_to(tmp_path / "secret.png")
    (tmp_path / "secret.png").write_bytes((folder / "ok.png").read_bytes())
    return folder


def test_only_regular_files_under_the_roots_are_read(root):
    policy = ImagePolicy.build([root], max_bytes=1 << 20, max_pixels=100)
    assert policy.read(ImagePath(str(root / "ok.png"), "p")).data == (root / "ok.png").read_bytes()
    assert policy.read(ImagePath("ok.png", "p")).data == (root / "ok.png").read_bytes()
    messages = set()
    for path in ("fifo", "link", "missing", ".", "../secret.png", str(root.parent / "secret.png"), "/dev/stdin",
                 "ok.png\0"):
        with pytest.raises(APIError) as info:
            policy.read(ImagePath(path, "p"))
        messages.add(info.value.message)
    assert len(messages) == 1
    with pytest.raises(APIError) as info:  # no roots: no path is read
        ImagePolicy().read(ImagePath(str(root / "ok.png"), "p"))
    assert info.value.message in messages
    with pytest.raises(APIError, match="more pixels"):
        ImagePolicy(max_pixels=63).check(InlineImage((root / "ok.png").read_bytes(), "p"))
    assert ImagePolicy(max_pixels=64).check(InlineImage((root / "ok.png").read_bytes(), "p")) == (8, 8)


def test_cli_refuses_a_missing_image_root_before_loading(tmp_path, capsys):
    from launcher.cli import main as cli_main

    assert cli_main(["serve", str(tmp_path), "--image-root", str(tmp_path / "nowhere")]) == 2
    assert "--image-root" in capsys.readouterr().err
