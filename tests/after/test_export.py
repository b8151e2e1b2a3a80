"""Export: a merged LoRA model gives the adapter's logits, shards reload, targets are never clobbered silently."""
from __future__ import annotations

import json

import pytest
import torch

from launcher.export.cli import export_main
from launcher.export.hf import ExportArgs, ExportError, export_run


def probe_ids(tokenizer):
    texts = ["<|im_start|>user\nAdd the two numbers.\n43+29<|im_end|>\n<|im_start|>assistant\n", "Hello, world!"]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def logits(model, ids, mask):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_lora_export_equals_base_plus_adapter(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert export_main([str(lora_run), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "export_info.json",
            "tokenizer_config.json"} <= names
    assert not any(n.startswith("adapter") for n in names)

    # Reference: the base the run trained on plus the adapter it saved, through PEFT, unmerged.
    base = AutoModelForCausalLM.from_pretrained(lora_run / "base_model")
    reference = PeftModel.from_pretrained(base, lora_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids, mask = probe_ids(tokenizer)
    expected = logits(reference, ids, mask)
    merged = AutoModelForCausalLM.from_pretrained(out)
    got = logits(merged, ids, mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
    # The adapter did change the model: the merged weights are not just the base.
    assert (got - logits(AutoModelForCausalLM.from_pretrained(lora_run / "base_model"), ids, mask)).abs().max() > 1e-3

    # A standalone model: chat template and stop token travel with it.
    assert tokenizer.chat_template
    assert merged.generation_config.eos_token_id == tokenizer.eos_token_id
    assert merged.generation_config.pad_token_id == tokenizer.pad_token_id
    info = json.loads((out / "export_info.json").read_text())
    assert info["merged_lora"] and info["source"] == "final model" and info["lora"]["r"] == 8


def test_export_refuses_to_overwrite_unless_forced(lora_run, tmp_path, capsys, monkeypatch):
    from launcher.cli import main as cli_main

    out = tmp_path / "exp"
    export_run(lora_run, ExportArgs(out=str(out)))
    marker = out / "keep-me.txt"
    marker.write_text("user file")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_run(lora_run, ExportArgs(out=str(out)))
    assert marker.exists()
    # Through the CLI's error path: one line, exit code 2 (export is not wired into the table yet).
    import launcher.cli as cli

    if "export" not in cli.COMMANDS:
        monkeypatch.setitem(cli.COMMANDS, "export", export_main)
    assert cli_main(["export", str(lora_run), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    # --force replaces a previous export, but not one the user has put a file of their own in.
    with pytest.raises(ExportError, match=r"holds other files \(keep-me.txt\)"):
        export_run(lora_run, ExportArgs(out=str(out), force=True))
    assert marker.read_text() == "user file"
    marker.unlink()
    export_run(lora_run, ExportArgs(out=str(out), force=True))
    assert (out / "model.safetensors").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    # Never the run itself, not even with --force.
    for target in (lora_run, lora_run / "model", lora_run.parent):
        with pytest.raises(ExportError, match="holds the run"):
            export_run(lora_run, ExportArgs(out=str(target), force=True))
    assert (lora_run / "model" / "adapter_config.json").exists()


def test_small_shards_reload(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    export_run(lora_run, ExportArgs(out=str(whole)))
    export_run(lora_run, ExportArgs(out=str(sharded), max_shard_size="300KB"))
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) >= 3
    assert all(p.stat().st_size <= 300_000 + 200_000 for p in shards)  # a single tensor may exceed the limit
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    tokenizer = AutoTokenizer.from_pretrained(sharded)
    ids, mask = probe_ids(tokenizer)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(sharded), ids, mask),
                               logits(AutoModelForCausalLM.from_pretrained(whole), ids, mask), rtol=0, atol=0)


def test_full_finetune_exports_final_and_checkpoint(full_run, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = export_run(full_run, ExportArgs())
    assert final == full_run / "export"
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids, mask = probe_ids(tokenizer)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(final), ids, mask),
                               logits(AutoModelForCausalLM.from_pretrained(full_run / "model"), ids, mask),
                               rtol=0, atol=0)

    at_step1 = export_run(full_run, ExportArgs(out=str(tmp_path / "step1"), checkpoint="step-1"))
    assert json.loads((at_step1 / "export_info.json").read_text())["source"] == "checkpoint step-0000001"
    saved = torch.load(full_run / "checkpoints" / "step-0000001" / "state.pt", weights_only=False)["model"]
    exported = load_file(at_step1 / "model.safetensors")
    assert set(saved) <= set(exported) | {"lm_head.weight"}
    for name, tensor in saved.items():
        if name in exported:
            torch.testing.assert_close(exported[name], tensor, rtol=0, atol=0)
    # Step 1 is not the final model.
    final_weights = load_file(final / "model.safetensors")
    assert any(not torch.equal(final_weights[n], exported[n]) for n in exported)

    with pytest.raises(Exception, match="not a complete checkpoint"):
        export_run(full_run, ExportArgs(out=str(tmp_path / "nope"), checkpoint="step-7"))


def test_force_never_replaces_a_folder_that_is_not_an_export(lora_run, tmp_path):
    mine = tmp_path / "my-project"
    (mine / "src").mkdir(parents=True)
    (mine / "src" / "train.py").write_text("print('mine')")
    (mine / "config.json").write_text("{}")
    with pytest.raises(ExportError, match=r"replaces only a previous export.*config.json, src/train.py"):
        export_run(lora_run, ExportArgs(out=str(mine), force=True))
    assert (mine / "src" / "train.py").read_text() == "print('mine')" and (mine / "config.json").read_text() == "{}"
    # A folder that only looks like an export (its export_info.json lists no files) is not ours either.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "export_info.json").write_text('{"source": "final model"}')
    (fake / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ExportError, match="holds other files"):
        export_run(lora_run, ExportArgs(out=str(fake), force=True))


def test_exports_are_readable_as_the_umask_allows(lora_run, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = export_run(lora_run, ExportArgs(out=str(tmp_path / "shared")))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644, oct(modes["model.safetensors"])  # safetensors alone writes 0600
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items()}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    info = json.loads((out / "export_info.json").read_text())
    assert set(info["files"]) == set(modes)
