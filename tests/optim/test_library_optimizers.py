"""method.optimizer's library optimizers on a tiny Qwen2, on the CPU:

- each changes the weights and its state as its library does when called directly, the way LLaMA-Factory builds
  it (two steps on the same batch, compared bit for bit): GaLore's projectors, APOLLO's, BAdam's active block,
  Adam-mini's, Muon's momentum;
- each resumes exactly through the DDP engine's checkpoint: 2 steps, save, a fresh engine loads, 2 more steps
  equal 4 straight (weights and optimizer state), with the projection refreshed and BAdam's block switched
  across the resume;
- pure_bf16 keeps weights, gradients and optimizer state in bf16.

bitsandbytes' 8-bit and paged AdamW need CUDA: tests/gpu/gpu_optimizers_check.py (the GPU test below skips here).
"""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.engines.distributed import DistInfo
from launcher.engines.optim import build_optimizer
from launcher.models.build import build_base_model
from launcher.models.tokenizers import load_tokenizer

SMALL = ["model.config.hidden_size=64", "model.config.intermediate_size=128", "model.config.num_hidden_layers=3",
         "method.lr=1e-2", "method.galore.rank=4", "method.galore.update_interval=2", "method.apollo.rank=4",
         "method.apollo.update_interval=2", "method.badam.switch_interval=2", "train.warmup_ratio=0",
         "train.lr_scheduler=cosine", "train.max_grad_norm=1.0", "train.seed=3"]
LINEAR_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""What LLaMA-Factory's find_all_linear_modules gives for a Qwen2 (every linear but lm_head)."""
CPU_OPTIMIZERS = ["adafactor", "galore_adamw", "galore_adafactor", "apollo_adamw", "badam", "adam_mini", "muon"]
LIBRARY = {"galore_adamw": "galore_torch", "galore_adafactor": "galore_torch", "apollo_adamw": "apollo_torch",
           "badam": "badam", "adam_mini": "adam_mini"}


def needs_library(optimizer: str):
    module = LIBRARY.get(optimizer)
    return pytest.mark.skipif(module is not None and importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed (pip install -e '.[optimizers]')")


def params(optimizers):
    return [pytest.param(o, marks=needs_library(o)) for o in optimizers]


def config(optimizer: str, *extra):
    return compose_config([f"method.optimizer={optimizer}", *SMALL, *extra])


def tiny_model(cfg, dtype=torch.float32):
    torch.manual_seed(cfg.train.seed)
    return build_base_model(cfg, load_tokenizer(cfg.model), "sdpa", dtype)


def batch(step: int) -> torch.Tensor:
    return torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(100 + step))


def train_step(model, optimizer, step: int) -> None:
    ids = batch(step)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------ the libraries' reference


def linear_weights(model, names=LINEAR_NAMES):
    """LLaMA-Factory's selection for GaLore/APOLLO: 2-D weights of nn.Linear modules whose name holds a target."""
    return [m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and any(t in n for t in names)]


def rest_of(model, chosen):
    ids = {id(p) for p in chosen}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in ids]


def reference_optimizer(optimizer: str, model, cfg):
    """The library called directly, as LLaMA-Factory's trainer_utils builds it (weight decay 0 here)."""
    m = cfg.method
    adam = dict(lr=m.lr, betas=(m.adam_beta1, m.adam_beta2), eps=m.adam_eps)
    if optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(model.parameters(), lr=m.lr, scale_parameter=False, relative_step=False)
    if optimizer.startswith("galore"):
        import galore_torch

        projected = linear_weights(model)
        groups = [{"params": rest_of(model, projected)},
                  {"params": projected, "rank": 4, "update_proj_gap": 2, "scale": 2.0, "proj_type": "std"}]
        if optimizer == "galore_adamw":
            return galore_torch.GaLoreAdamW(groups, **adam)
        return galore_torch.GaLoreAdafactor(groups, lr=m.lr, scale_parameter=False, relative_step=False)
    if optimizer == "apollo_adamw":
        import apollo_torch

        projected = linear_weights(model)
        groups = [{"params": rest_of(model, projected)},
                  {"params": projected, "rank": 4, "proj": "random", "proj_type": "std", "update_proj_gap": 2,
                   "scale": 32.0, "scale_type": "channel"}]
        return apollo_torch.APOLLOAdamW(groups, scale_front=False, **adam)
    if optimizer == "badam":
        from badam import BlockOptimizer

        base = torch.optim.AdamW(model.parameters(), **adam, weight_decay=0.0, foreach=False)
        return BlockOptimizer(base_optimizer=base, named_parameters_list=list(model.named_parameters()),
                              switch_block_every=2, switch_mode="ascending", verbose=0)
    if optimizer == "adam_mini":
        from adam_mini import Adam_mini

        c = model.config
        return Adam_mini(named_parameters=model.named_parameters(), dim=c.hidden_size, n_heads=c.num_attention_heads,
                         n_kv_heads=c.num_key_value_heads, verbose=False, **adam)
    if optimizer == "muon":
        hidden = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n and "lm_head" not in n]
        muon = torch.optim.Muon(hidden, lr=m.lr, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(rest_of(model, hidden), **adam, weight_decay=0.0, foreach=False)
        return Stepped([muon, adamw])
    raise AssertionError(optimizer)


class Stepped:
    """Two torch optimizers stepped by hand, as torch's Muon documentation shows."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    def step(self):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)


def states_by_name(model, optimizer) -> dict:
    """name -> that parameter's optimizer state (Muon: across both optimizers; BAdam: its fp32 copies' state)."""
    children = getattr(optimizer, "optimizers", [optimizer])
    state = {}
    for child in children:
        state.update(child.state)
        state.update(getattr(child, "base_optimizer", child).state)
    out = {}
    for name, p in model.named_parameters():
        if p in state:
            out[name] = state[p]
    hp = getattr(optimizer, "param_idx2hp", None)
    if hp:
        names = [n for n, _ in model.named_parameters()]
        base_state = optimizer.base_optimizer.state
        out.update({names[i]: base_state[h] for i, h in hp.items() if h in base_state})
    return out


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a, "different parameters hold optimizer state"
    for name in a:
        for key, value in a[name].items():
            other = b[name][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), f"{name} state {key} differs"
            elif hasattr(value, "ortho_matrix"):  # GaLore's / APOLLO's projector
                assert torch.equal(value.ortho_matrix, other.ortho_matrix), f"{name} projector differs"
            else:
                assert value == other, f"{name} state {key}: {value} != {other}"


def assert_same_weights(a, b) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), f"{name} differs: max |diff| {(p - q).abs().max()}"


@pytest.mark.parametrize("optimizer", params(CPU_OPTIMIZERS))
def test_state_changes_as_the_library_does(optimizer):
    cfg = config(optimizer)
    ours_model = tiny_model(cfg)
    ref_model = copy.deepcopy(ours_model)
    start = {n: p.detach().clone() for n, p in ours_model.named_parameters()}
    ours, ref = build_optimizer(ours_model, cfg.method), reference_optimizer(optimizer, ref_model, cfg)
    for step in range(2):
        train_step(ours_model, ours, step)
        train_step(ref_model, ref, step)
    assert_same_weights(ours_model, ref_model)
    moved = [n for n, p in ours_model.named_parameters() if not torch.equal(p, start[n])]
    assert moved, "two steps changed no weight"
    ours_state, ref_state = states_by_name(ours_model, ours), states_by_name(ref_model, ref)
    assert_same_state(ours_state, ref_state)
    if optimizer.startswith(("galore", "apollo")):
        projected = {n for n, s in ours_state.items() if "projector" in s}
        expected = {n for n, _ in ours_model.named_parameters() if n.endswith(".weight") and any(
            f".{t}." in n for t in LINEAR_NAMES)}
        assert projected == expected, "the projected matrices are not LLaMA-Factory's (every linear but lm_head)"
    if optimizer == "badam":  # after 2 steps with switch_interval=2 the second block trains, as the library's
        assert ours.active_block == 1 and ref.current_block_idx == ours.current_block_idx == 2
        assert [n for n, p in ours_model.named_parameters() if p.requires_grad] == [
            n for n, p in ref_model.named_parameters() if p.requires_grad]
    if optimizer == "muon":
        buffers = [n for n, s in ours_state.items() if "momentum_buffer" in s]
        assert buffers and all(ours_model.get_parameter(n).ndim == 2 and "embed" not in n for n in buffers)
        assert "model.embed_tokens.weight" in ours_state and "exp_avg" in ours_state["model.embed_tokens.weight"]


# ------------------------------------------------------------------------------------------- exact resume


def engine_for(cfg, total_steps=4):
    from launcher.engines.ddp import DDPEngine
    from launcher.engines.precision import resolve_precision

    device = torch.device("cpu")
    model = tiny_model(cfg, resolve_precision(cfg.model.dtype, device, cfg.method.pure_bf16).param_dtype)
    return DDPEngine(cfg, model, DistInfo(0, 1, 0, device), total_steps, lambda m, c: m,
                     resolve_precision(cfg.model.dtype, device, cfg.method.pure_bf16))


def engine_step(engine, step: int) -> None:
    ids = batch(step)
    engine.backward(engine.model(input_ids=ids, labels=ids).loss)
    engine.step()


@pytest.mark.parametrize("optimizer", params(CPU_OPTIMIZERS))
def test_exact_resume_through_the_checkpoint(optimizer, tmp_path):
    cfg = config(optimizer)
    straight = engine_for(cfg)
    for step in range(4):
        engine_step(straight, step)

    first = engine_for(cfg)
    for step in range(2):
        engine_step(first, step)
    first.save_checkpoint(tmp_path, {})
    del first
    resumed = engine_for(cfg)  # a new process: the model rebuilt from its seed, then the checkpoint loaded
    resumed.load_checkpoint(tmp_path)
    for step in range(2, 4):
        engine_step(resumed, step)

    assert_same_weights(resumed.model, straight.model)
    assert_same_state(states_by_name(resumed.model, resumed.optimizer),
                      states_by_name(straight.model, straight.optimizer))
    assert resumed.lr == straight.lr
    if optimizer == "badam":  # blocks 0 then 1 trained (the resumed run holds block 0's trained weights); 2 is next
        assert resumed.optimizer.active_block == straight.optimizer.active_block == 2
        assert resumed.optimizer.global_step == 4


def test_pure_bf16_keeps_weights_and_state_in_bf16(tmp_path):
    cfg = config("adamw", "method.pure_bf16=true")
    engine = engine_for(cfg)
    assert engine.precision.pure and "no fp32 master copy" in engine.precision.describe()
    before = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    for step in range(2):
        engine_step(engine, step)
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    moments = [s["exp_avg"] for s in engine.optimizer.state.values()]
    assert moments and {t.dtype for t in moments} == {torch.bfloat16}
    assert any(not torch.equal(p, before[n]) for n, p in engine.model.named_parameters())
    engine.save_checkpoint(tmp_path, {})
    resumed = engine_for(cfg)
    resumed.load_checkpoint(tmp_path)
    assert_same_weights(resumed.model, engine.model)
    assert {s["exp_avg"].dtype for s in resumed.optimizer.state.values()} == {torch.bfloat16}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes' 8-bit optimizers need a CUDA GPU")
def test_bnb_8bit_optimizers_on_cuda():
    from tests.gpu.gpu_optimizers_check import check_bnb

    check_bnb()


@pytest.mark.parametrize("optimizer", params(["galore_adamw"]))
def test_layerwise_steps_in_backward_as_the_grouped_one_and_resumes(optimizer, tmp_path):
    """LLaMA-Factory's galore_layerwise (apollo_layerwise: the same class): an optimizer per parameter stepped in the
    backward hooks gives the grouped optimizer's weights (no clipping: layer-wise steps before any norm exists), and
    resumes. (APOLLO seeds each matrix's random projection by its index in its optimizer, so per-parameter
    optimizers, all index 1 in LLaMA-Factory too, project differently from the grouped one.)"""
    section = optimizer.split("_")[0]
    grouped_cfg = config(optimizer, "train.max_grad_norm=0")
    layerwise_cfg = config(optimizer, "train.max_grad_norm=0", f"method.{section}.layerwise=true")
    grouped, straight = engine_for(grouped_cfg), engine_for(layerwise_cfg)
    for step in range(4):
        engine_step(grouped, step)
        engine_step(straight, step)
        assert all(p.grad is None for p in straight.model.parameters()), "a gradient outlived its backward pass"
    if optimizer == "galore_adamw":
        assert_same_weights(straight.model, grouped.model)

    first = engine_for(layerwise_cfg)
    for step in range(2):
        engine_step(first, step)
    first.save_checkpoint(tmp_path, {})
    resumed = engine_for(layerwise_cfg)
    resumed.load_checkpoint(tmp_path)
    for step in range(2, 4):
        engine_step(resumed, step)
    assert_same_weights(resumed.model, straight.model)


@pytest.mark.parametrize("optimizer", params(["badam"]))
def test_stop_and_resume_through_the_trainer(optimizer, output_root):
    """The whole loop (SFT recipe, checkpoint files, RNG, data plan) with BAdam, whose block switch (every 2 steps)
    falls on the resume: 4 steps straight, and 2 + stop + 2 more, give the same losses and final weights."""
    from tests.resume.helpers import assert_same_weights as same_files, final_weights, train_losses
    from tests.resume.test_exact_resume_local import StopAt, make_run, train

    extra = [f"method.optimizer={optimizer}", "method.badam.switch_interval=2", "train.max_steps=4",
             "model.config.num_hidden_layers=2"]
    cfg, straight = make_run(output_root, "straight", extra)
    train(cfg, straight)
    cfg, run_dir = make_run(output_root, "resumed", [*extra, "train.save_every=2"])
    assert train(cfg, run_dir, stop_at=2)["final_step"] == 2
    assert train(cfg, run_dir)["final_step"] == 4
    assert train_losses(run_dir) == train_losses(straight)
    same_files(final_weights(run_dir), final_weights(straight))
