"""launcher export --format onnx: onnxruntime runs the exported graph and gives the trained model's logits (a LoRA
run, merged), for another batch size and length than the one traced; an existing export is not overwritten."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from launcher.cli import main as cli_main  # noqa: E402


def test_onnx_export_of_a_lora_run_gives_torchs_logits_under_onnxruntime(lora_run, tmp_path, capsys):
    import onnxruntime as ort

    from launcher.inference.trained import load_trained_model

    out = tmp_path / "onnx"
    assert cli_main(["export", str(lora_run), "--format", "onnx", "--out", str(out)]) == 0
    assert "onnxruntime logits within" in capsys.readouterr().out
    info = json.loads((out / "export_info.json").read_text())
    assert info["onnxruntime_check"]["max_abs_diff"] <= 1e-4
    assert {"model.onnx", "config.json", "tokenizer.json", "export_info.json"} <= {p.name for p in out.iterdir()}

    model, tokenizer = load_trained_model(lora_run, merge=True)
    texts = ["<|im_start|>user\nadd 3 and 4<|im_end|>\n<|im_start|>assistant\n", "hi"]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": batch["input_ids"].numpy(),
                                   "attention_mask": batch["attention_mask"].numpy()})[0]
    valid = batch["attention_mask"].numpy().astype(bool)
    assert got.shape == expected.shape
    assert np.abs(got[valid] - expected[valid]).max() < 1e-4
    # the merged adapter is in the graph: the base alone gives other logits
    base, _ = load_trained_model(lora_run, merge=False)
    with torch.no_grad(), base.disable_adapter():
        plain = base(**batch).logits.numpy()
    assert np.abs(plain[valid] - got[valid]).max() > 1e-3

    capsys.readouterr()
    assert cli_main(["export", str(lora_run), "--format", "onnx", "--out", str(out)]) != 0
    assert "already exists; pass --force" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    assert cli_main(["export", str(lora_run), "--format", "onnx", "--out", str(out), "--force"]) != 0
    assert "holds other files" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_onnx_export_of_a_vl_folder_writes_its_language_model(tmp_path, capsys):
    """A Hugging Face Qwen2-VL folder: the graph is its language model with the LM head, for text input; its
    onnxruntime logits equal the VL model's text-only logits."""
    import onnxruntime as ort

    from launcher.models.vision import auto_class_for
    from tests.vl.helpers import save_tiny_vl_folder

    folder = save_tiny_vl_folder(tmp_path / "tiny-vl")
    assert cli_main(["export", str(folder), "--format", "onnx"]) == 0
    out = tmp_path / "tiny-vl-onnx"
    assert json.loads((out / "export_info.json").read_text())["model_type"] == "qwen2_vl"
    model = auto_class_for(folder).from_pretrained(folder).eval()
    ids = torch.randint(0, 100, (1, 13), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4
