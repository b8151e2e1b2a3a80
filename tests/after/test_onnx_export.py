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
