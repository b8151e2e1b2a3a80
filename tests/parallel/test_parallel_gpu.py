"""On GPUs: bf16 (and flash-attention 2 where installed) under ZeRO-3 and FSDP2 track DDP and save bf16 models.

Skipped without CUDA. Uses every visible GPU (1 is enough: a world of one still shards through the engine).
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# bf16 matmuls reorder differently under sharded gathers; a few bf16 ulps of drift per step.
BF16_LOSS_RTOL = 2e-2
BF16_LOGITS_ATOL = 5e-2


@pytest.fixture(scope="module")
def gpu_root(tmp_path_factory):
    return tmp_path_factory.mktemp("parallel-gpu")


@pytest.fixture(scope="module")
def gpu_nproc():
    return min(2, torch.cuda.device_count())


@pytest.mark.parametrize("parallelism", ["zero3", "fsdp"])
def test_bf16_sharded_matches_ddp_and_saves_bf16(gpu_root, gpu_nproc, parallelism, monkeypatch):
    import json

    from safetensors import safe_open

    from launcher.inference.trained import load_trained_model
    from launcher.models.build import flash_attn_usable
    from tests.parallel import test_parallel_train as t

    monkeypatch.setattr(t, "NPROC", gpu_nproc)
    attn = "flash_attention_2" if flash_attn_usable(torch.device("cuda", 0)) else "sdpa"
    common = ["model.dtype=auto", f"model.attn_implementation={attn}"]
    ddp = t.launch(gpu_root, "gpu-ddp", ["parallelism=ddp", *common])
    run_dir = t.launch(gpu_root, f"gpu-{parallelism}", [f"parallelism={parallelism}", *common,
                                                        "train.gradient_checkpointing=true"])
    got, want = t.train_losses(run_dir), t.train_losses(ddp)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=BF16_LOSS_RTOL)
    report = json.loads((run_dir / "summary.json").read_text())["parallelism"]
    if parallelism == "fsdp":
        assert report["param_dtype"] == "bfloat16" and report["sharded_params"] == report["total_params"]
    with safe_open(str(run_dir / "model" / "model.safetensors"), "pt") as fh:
        assert fh.get_tensor(next(iter(fh.keys()))).dtype == torch.bfloat16
    probe = torch.load(run_dir / "probe_logits.pt")
    model, _ = load_trained_model(run_dir, device=torch.device("cuda", 0))
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"].cuda(), attention_mask=probe["attention_mask"].cuda()).logits
    torch.testing.assert_close(logits.float().cpu(), probe["logits"], rtol=0, atol=BF16_LOGITS_ATOL)
