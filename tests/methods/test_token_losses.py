"""The SFT token losses DFT, EAFT and ASFT (method.token_loss.name) against their formulas written out here one
position at a time with Python's math (launcher.training.token_losses has the papers' formulas), their gradients
(the weights are constants), the chunked sum, and a few training steps of each through the recipe: at the first
step ASFT's KL to the starting model is 0, so its loss is DFT's."""
from __future__ import annotations

import math

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.training.token_losses import chunked_token_loss_sum, token_losses


def softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def reference_losses(name, logits, targets, ref_logits=None, asft_alpha=0.1, eaft_alpha=1.0):
    out = []
    for i, (row, y) in enumerate(zip(logits.tolist(), targets.tolist())):
        p = softmax(row)
        ce = -math.log(p[y])
        if name == "dft":
            out.append(p[y] * ce)
        elif name == "eaft":
            top = sorted(row, reverse=True)[:20]
            q = softmax(top)
            entropy = -sum(x * math.log(x) for x in q)
            out.append((entropy / 3.0) ** eaft_alpha * ce)
        else:  # asft: dft + alpha * sum_v r(v) (log r(v) - log p(v))
            r = softmax(ref_logits[i].tolist())
            kl = sum(rv * (math.log(rv) - math.log(pv)) for rv, pv in zip(r, p))
            out.append(p[y] * ce + asft_alpha * kl)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name,kwargs", [("dft", {}), ("eaft", {"eaft_alpha": 1.0}), ("eaft", {"eaft_alpha": 0.5}),
                                         ("asft", {"asft_alpha": 0.1}), ("asft", {"asft_alpha": 0.7})])
def test_token_loss_matches_its_formula_and_its_weight_is_a_constant(name, kwargs):
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(7, 33, generator=gen) * 3).requires_grad_(True)
    targets = torch.randint(0, 33, (7,), generator=gen)
    ref = torch.randn(7, 33, generator=gen) * 3 if name == "asft" else None
    got = token_losses(name, logits, targets, ref_logits=ref, **kwargs)
    expected = reference_losses(name, logits.detach(), targets, ref, **kwargs)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)

    # gradient: weight_t x dCE_t (+ alpha x dKL_t), with the weight held constant
    got.sum().backward()
    probs = torch.softmax(logits.detach(), -1)
    d_ce = probs - torch.nn.functional.one_hot(targets, 33)
    if name == "eaft":
        weight = reference_losses("eaft", logits.detach(), targets, **kwargs) / \
            torch.nn.functional.cross_entropy(logits.detach(), targets, reduction="none").double()
    else:
        weight = probs.gather(1, targets[:, None]).squeeze(1).double()
    expected_grad = weight[:, None] * d_ce.double()
    if name == "asft":  # d/dz KL(r || softmax(z)) = p - r
        expected_grad += kwargs["asft_alpha"] * (probs - torch.softmax(ref, -1)).double()
    torch.testing.assert_close(logits.grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


def test_chunked_sum_equals_the_whole_sum():
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 40, bias=False)
    hidden = torch.randn(11, 8, generator=gen)
    targets = torch.randint(0, 40, (11,), generator=gen)
    ref_hidden = torch.randn(11, 8, generator=gen)
    for name in ("dft", "eaft", "asft"):
        ref = (ref_hidden, head) if name == "asft" else (None, None)
        chunked = chunked_token_loss_sum(hidden, head, targets, 3, name, 0.2, 1.0, *ref)
        with torch.no_grad():
            whole = token_losses(name, head(hidden), targets, 0.2, 1.0, head(ref_hidden) if ref[0] is not None else None)
        torch.testing.assert_close(chunked.detach(), whole.sum())


def test_token_loss_is_refused_outside_sft():
    with pytest.raises(ConfigError, match="method.token_loss.name: dft is an SFT loss"):
        compose_config(["method=dpo", "method.token_loss.name=dft"])
    with pytest.raises(ConfigError, match="method.token_loss.name: 'focal' is not one of ce, dft, eaft, asft"):
        compose_config(["method.token_loss.name=focal"])
    with pytest.raises(ConfigError, match="asft keeps a frozen reference"):
        compose_config(["method.token_loss.name=asft", "parallelism=fsdp"])


@pytest.mark.parametrize("method,loss", [("sft_full", "asft"), ("lora", "asft"), ("sft_full", "eaft")])
def test_training_steps_use_the_chosen_loss(output_root, method, loss):
    """The first step's logged loss is the chosen loss of the starting model on the first step's rows, recomputed
    here with token_losses on the full logits (ASFT: KL = 0 at the start, so DFT's value)."""
    from recipes.sft import SFTRecipe
    from tests.recipe_runs import run_recipe
    from tests.test_train import losses

    overrides = [f"method={method}", f"method.token_loss.name={loss}", "train.max_steps=2", "train.micro_batch_size=4",
                 "train.log_every=1", "train.eval_every=0", "train.warmup_ratio=0", "data.max_samples=16",
                 "train.exact_match_samples=0", "logger=none", "train.save_model=false", "method.lr=1e-2"]
    torch.manual_seed(0)
    recipe, run_dir, _ = run_recipe(SFTRecipe, output_root, overrides)
    logged = losses(run_dir)
    assert len(logged) == 2 and all(math.isfinite(v) for v in logged)
    # rebuild the starting model and the first batch, and compute the loss independently
    from launcher.engines.model_build import build_model

    cfg = recipe.cfg
    torch.manual_seed(cfg.train.seed)
    start = build_model(cfg, recipe.tokenizer, recipe.dist, recipe.attn_impl, recipe.precision).eval()
    batch = recipe.trainer.micro_batches_for_step(0)[0][0]
    with torch.no_grad():
        logits = start(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                       position_ids=batch.get("position_ids")).logits
    trained = batch["shift_labels"] != -100
    name = "dft" if loss == "asft" else loss  # KL(start || start) = 0
    expected = token_losses(name, logits[trained], batch["shift_labels"][trained]).sum() / int(trained.sum())
    assert logged[0] == pytest.approx(float(expected), rel=1e-5)
    plain = torch.nn.functional.cross_entropy(logits[trained], batch["shift_labels"][trained])
    assert abs(logged[0] - float(plain)) > 1e-3  # not cross-entropy
