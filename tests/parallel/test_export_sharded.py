"""Sharded checkpoints export, predict and chat: FSDP's DCP shards and DeepSpeed's ZeRO-3 shards, full and LoRA.

Each run trains 2 steps on 2 CPU ranks (gloo), then writes a checkpoint of the final step and records the live
sharded model's logits on 3 held-out rows (tests/parallel/worker.py). ``launcher export RUN_DIR/checkpoints/
step-N`` must give a standalone HF model with those logits, and the loader that predict and chat use
(``--checkpoint step-N``) the same.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.launch.rundir import make_run_dir, write_run_config
from tests.parallel.test_parallel_train import COMMON, LOGITS_ATOL, LORA, NPROC, REPO_ROOT, WORKER

STEPS = 2


def train_with_checkpoint(root: Path, name: str, overrides: list) -> Path:
    cfg = compose_config([f"run.output_root={root}", *COMMON, f"train.max_steps={STEPS}", *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}",
           str(WORKER), "--run-dir", str(run_dir), "--checkpoint-after"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name}: torchrun exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return run_dir


def logits_of(model, probe: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits.float()


@pytest.mark.parametrize("parallelism,lora", [("fsdp", False), ("fsdp", True), ("zero3", False), ("zero3", True)])
def test_export_from_sharded_checkpoint_gives_the_live_logits(tmp_path, parallelism, lora):
    from transformers import AutoModelForCausalLM

    from launcher.export.hf import ExportArgs, export_run
    from launcher.inference.trained import load_run_model

    name = f"{parallelism}{'-lora' if lora else ''}"
    run_dir = train_with_checkpoint(tmp_path, name, [f"parallelism={parallelism}", *(LORA if lora else [])])
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
