"""bitsandbytes' 8-bit optimizers (and the CPU-tested ones' resume on a GPU), standalone on one CUDA GPU (well under
a minute): ``PYTHONPATH=. python tests/gpu/gpu_optimizers_check.py``.

What it checks, printing each figure:
1. bitsandbytes is importable and CUDA is there (if not: says so, exit code 2, nothing else runs);
2. method.optimizer=adamw_8bit and paged_adamw_8bit change the weights and the 8-bit state as bitsandbytes' AdamW
   (optim_bits=8, is_paged) called directly does (2 steps, bit for bit), and galore_adamw_8bit as galore-torch's
   GaLoreAdamW8bit does;
3. each of them, and galore_adamw (its projector matrices live on the GPU), resumes exactly through the DDP
   engine's checkpoint: 2 steps, save, a fresh engine loads, 2 more equal 4 straight.
The model is the tiny Qwen2 of tests/optim (random init, hidden 64; its matrices have 8192+ elements, above
bitsandbytes' 4096-element threshold for 8-bit state).

Exit codes: 0 all passed, 1 a check failed (the assertion says which), 2 bitsandbytes or CUDA missing.
tests/optim/test_library_optimizers.py calls ``check_bnb`` as its GPU test (skipped without CUDA).
"""
from __future__ import annotations

import copy
import importlib.util
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _engine(cfg, device):
    import torch

    from launcher.engines.ddp import DDPEngine
    from launcher.engines.distributed import DistInfo
    from launcher.engines.precision import resolve_precision
    from tests.optim.test_library_optimizers import tiny_model

    precision = resolve_precision("float32", device)
    model = tiny_model(cfg, torch.float32)
    return DDPEngine(cfg, model, DistInfo(0, 1, 0, device), 4, lambda m, c: m, precision)


def _step(engine, step, device):
    from tests.optim.test_library_optimizers import batch

    ids = batch(step).to(device)
    engine.backward(engine.model(input_ids=ids, labels=ids).loss)
    engine.step()


def _same(a, b, what):
    import torch

    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), f"{what}: {name} differs by up to {(p - q).abs().max().item():.3g}"


def check_reference(optimizer: str, device) -> None:
    import bitsandbytes as bnb
    import torch

    from launcher.engines.optim import build_optimizer
    from tests.optim.test_library_optimizers import config, linear_weights, rest_of, tiny_model

    cfg = config(optimizer, "model.dtype=float32")
    ours_model = tiny_model(cfg).to(device)
    ref_model = copy.deepcopy(ours_model)
    ours = build_optimizer(ours_model, cfg.method)
    m = cfg.method
    adam = dict(lr=m.lr, betas=(m.adam_beta1, m.adam_beta2), eps=m.adam_eps, weight_decay=0.0)
    if optimizer == "galore_adamw_8bit":
        import galore_torch

        projected = linear_weights(ref_model)
        ref = galore_torch.GaLoreAdamW8bit([{"params": rest_of(ref_model, projected)},
                                            {"params": projected, "rank": 4, "update_proj_gap": 2, "scale": 2.0,
                                             "proj_type": "std"}], **adam)
    else:
        ref = bnb.optim.AdamW(ref_model.parameters(), optim_bits=8, is_paged=optimizer == "paged_adamw_8bit", **adam)
    for step in range(2):
        _train(ours_model, ours, step, device)
        _train(ref_model, ref, step, device)
    _same(ours_model, ref_model, f"{optimizer} against bitsandbytes directly")
    states = [s for s in ours.state.values() if "state1" in s]
    assert states and any(s["state1"].dtype == torch.uint8 for s in states), "no 8-bit state"
    print(f"{optimizer}: 2 steps equal to the library's; {len(states)} tensors with 8-bit state")


def _train(model, optimizer, step, device):
    from tests.optim.test_library_optimizers import batch

    ids = batch(step).to(device)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_resume(optimizer: str, device) -> None:
    from tests.optim.test_library_optimizers import config

    cfg = config(optimizer, "model.dtype=float32")
    straight = _engine(cfg, device)
    for step in range(4):
        _step(straight, step, device)
    first = _engine(cfg, device)
    for step in range(2):
        _step(first, step, device)
    with tempfile.TemporaryDirectory() as tmp:
        first.save_checkpoint(Path(tmp), {})
        resumed = _engine(cfg, device)
        resumed.load_checkpoint(Path(tmp))
    for step in range(2, 4):
        _step(resumed, step, device)
    _same(resumed.model, straight.model, f"{optimizer} resumed")
    print(f"{optimizer}: 2 + resume + 2 steps equal 4 straight on {device}")


def check_bnb() -> None:
    import torch

    device = torch.device("cuda", 0)
    for optimizer in ("adamw_8bit", "paged_adamw_8bit", "galore_adamw_8bit"):
        check_reference(optimizer, device)
    for optimizer in ("adamw_8bit", "paged_adamw_8bit", "galore_adamw_8bit", "galore_adamw", "apollo_adamw", "muon"):
        check_resume(optimizer, device)


def main() -> int:
    if importlib.util.find_spec("bitsandbytes") is None:
        print("bitsandbytes is not installed: nothing checked")
        return 2
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing checked")
        return 2
    check_bnb()
    print("all optimizer checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
