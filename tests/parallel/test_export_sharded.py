"""Sharded checkpoints export, predict and chat: FSDP's DCP shards and DeepSpeed's ZeRO-3 shards, full and LoRA.

The runs are test_parallel_train's (tests/parallel/conftest.py, trained once per session): 4 steps on 2 CPU
ranks (gloo), then a checkpoint of the final step and the live sharded model's logits on 3 held-out rows
(tests/parallel/worker.py). ``launcher export RUN_DIR/checkpoints/step-N`` must give a standalone HF model with
those logits, and the loader that predict and chat use (``--checkpoint step-N``) the same. FSDP's LoRA run is
the one with CPU offload: its checkpoint is the same DCP shards (the gather on save is the same code).
"""
from __future__ import annotations

import pytest
import torch

from tests.parallel.test_parallel_train import LOGITS_ATOL

STEPS = 4


def logits_of(model, probe: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits.float()


@pytest.mark.parametrize("name", ["fsdp", "fsdp_offload-lora", "zero3", "zero3-lora"])
def test_export_from_sharded_checkpoint_gives_the_live_logits(tmp_path, parallel_run, name):
    from transformers import AutoModelForCausalLM

    from launcher.export.hf import ExportArgs, export_run
    from launcher.inference.trained import load_run_model

    run_dir = parallel_run(name)
    checkpoint = run_dir / "checkpoints" / f"step-{STEPS:07d}"
    assert not (checkpoint / "model.safetensors").exists()  # really shards
    probe = torch.load(run_dir / "probe_logits.pt")

    out = export_run(checkpoint, ExportArgs(out=str(tmp_path / "exported")))
    import json

    assert json.loads((out / "export_info.json").read_text())["source"].endswith("(streamed)")  # tensor by tensor
    exported = AutoModelForCausalLM.from_pretrained(out)
    diff = (logits_of(exported, probe) - probe["logits"]).abs().max().item()
    torch.testing.assert_close(logits_of(exported, probe), probe["logits"], rtol=0, atol=LOGITS_ATOL)

    # predict and chat load --checkpoint step-N through this loader
    model, _, _, source = load_run_model(run_dir, checkpoint=f"step-{STEPS}", merge=True)
    assert source == f"checkpoint step-{STEPS:07d}"
    torch.testing.assert_close(logits_of(model, probe), probe["logits"], rtol=0, atol=LOGITS_ATOL)
    print(f"\n{name}: export of {checkpoint.name} (sharded) vs the live model: max |logit diff| {diff:.2e}")
