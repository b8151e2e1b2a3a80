"""Freeze tuning (method=freeze, i.e. method.finetuning=freeze): only the chosen layers and modules train, the others keep their initial
weights bit for bit; the loss falls and the saved full model reloads with the same logits."""
from __future__ import annotations

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from tests.recipe_runs import assert_reload_gives_same_logits
from tests.test_train import assert_loss_falls, probe_batch, run_sft


def test_freeze_trains_only_the_chosen_layers_and_reloads(output_root):
    torch.manual_seed(42)  # the recipe seeds with train.seed=42 too: the same random init, to compare against
    recipe, run_dir, _ = run_sft(output_root, ["method=freeze", "method.freeze.trainable_layers=1",
                                                  "method.freeze.trainable_modules=[mlp]",
                                                  "method.freeze.extra_modules=[norm]"])
    model = recipe.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith("model.layers.3.mlp.") or n == "model.norm.weight"}
    assert_loss_falls(run_dir)
    reloaded, _ = assert_reload_gives_same_logits(recipe, run_dir, probe_batch(recipe))
    # the frozen weights are still the initial ones: a fresh build from the same seed has them
    from launcher.engines.model_build import build_model

    torch.manual_seed(recipe.cfg.train.seed)
    fresh = build_model(recipe.cfg, recipe.tokenizer, recipe.dist, recipe.attn_impl, recipe.precision)
    fresh_params = dict(fresh.named_parameters())
    for name, param in reloaded.named_parameters():
        if name in trainable:
            assert not torch.equal(param, fresh_params[name]), name
        elif name in fresh_params:
            assert torch.equal(param, fresh_params[name]), name


def test_freeze_names_a_module_that_matches_nothing(output_root):
    with pytest.raises(ConfigError, match="method.freeze.trainable_modules: mpl matches no module"):
        run_sft(output_root, ["method=freeze", "method.freeze.trainable_modules=[mpl]"])


def test_freeze_is_refused_where_the_method_has_no_freeze():
    with pytest.raises(ConfigError, match="method.finetuning"):
        compose_config(["method=dpo", "method.finetuning=freeze"])


def test_dry_run_names_a_freeze_module_that_matches_nothing(tmp_path, capsys):
    from launcher.cli import main

    code = main(["train", "--dry-run", f"run.output_root={tmp_path}", "method=freeze",
                 "method.freeze.extra_modules=[norms]"])
    err = capsys.readouterr().err
    assert code != 0 and "method.freeze.extra_modules: norms matches no module of the model" in err, err
