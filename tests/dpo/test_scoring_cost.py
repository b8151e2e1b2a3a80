"""DPO's, KTO's and reward modelling's scoring outside the steps (and the causal-LM methods' held-out loss) is bounded by default and counted up front: the probe never
outgrows the rows the run trains on, the held-out rows honour train.eval_max_batches, the dry run says how
many forwards each pass takes, and a run logs each pass's progress and cost."""
import logging

from launcher.config.compose import compose_config
from launcher.training.probes import (batches_per_rank, describe_scoring, forwards_per_batch, held_out_size,
                                      probe_size, scoring_plan)
from tests.conftest import SHARED_DEMO


def test_probe_is_small_by_default_and_shrinks_with_max_steps():
    cfg = compose_config(["method=dpo_lora", "data=prefs"], check=False)
    assert cfg.method.dpo.probe_pairs == 8 and compose_config(["method=kto_lora"], check=False).method.kto.probe_rows == 8
    assert probe_size(64, total_steps=4, global_batch=2) == 8
    assert probe_size(8, total_steps=1, global_batch=2) == 2
    assert held_out_size(60, micro_batch=4, world=2, eval_max_batches=3) == 24
    assert held_out_size(60, micro_batch=4, world=2, eval_max_batches=0) == 60
    assert batches_per_rank(9, 4, 2) == 2 and batches_per_rank(0, 4, 1) == 0


def test_forwards_per_batch():
    def cfg(*o):
        return compose_config(list(o), check=False)

    assert forwards_per_batch(cfg("method=dpo_lora")) == 2  # policy + reference (adapters off)
    assert forwards_per_batch(cfg("method=dpo_lora", "method.dpo.loss_type=simpo")) == 1
    assert forwards_per_batch(cfg("method=dpo", "method.dpo.precompute_ref_log_probs=true")) == 1
    assert forwards_per_batch(cfg("method=kto_lora")) == 3
    assert forwards_per_batch(cfg("method=rm_lora")) == 1  # chosen and rejected rows in one batch
    assert forwards_per_batch(cfg("method=lora")) == 0


def test_dry_run_counts_the_forwards():
    cfg = compose_config(["method=dpo_lora", "data=prefs", "train.micro_batch_size=4", "train.grad_accum=1",
                          "train.max_steps=1", "train.eval_max_batches=2", "method.dpo.precompute_ref_log_probs=true"],
                         check=False)
    text = describe_scoring(cfg, world=1, train_rows=100, eval_rows=60, total_steps=1, accum=1)
    # 8 held-out pairs (2 batches of 4) + 4 probe pairs (one step of 4): 3 batches, policy only (precomputed)
    assert "8 held-out + 4 training pairs" in text and "3 micro-batches x 1 forwards = 3 forwards" in text
    assert "precomputed once before training: 160 pairs, 40 forwards" in text
    if SHARED_DEMO.is_dir():  # kto_en_demo is LLaMA-Factory's
        plan = scoring_plan(compose_config(["method=kto_lora", "data=kto_demo", f"data.dataset_dir={SHARED_DEMO}",
                                            "train.max_steps=4"], check=False))
        assert "15 held-out + 8 training rows" in plan and "x 3 forwards" in plan
    plan = scoring_plan(compose_config(["method=rm_lora", "data=prefs", "train.micro_batch_size=4",
                                        "train.eval_max_batches=2"], check=False))
    assert "8 held-out + 8 training pairs (method.rm.probe_pairs" in plan and "4 micro-batches x 1 forwards" in plan


def test_dry_run_counts_the_causal_lm_evaluations():
    cfg = compose_config(["method=lora", "train.micro_batch_size=4", "train.eval_every=5", "train.eval_max_batches=3",
                          "train.exact_match_samples=6", "train.max_new_tokens=10"], check=False)
    text = describe_scoring(cfg, world=2, train_rows=100, eval_rows=60, total_steps=20, accum=1)
    assert "held-out loss before training, every 5 steps and after: 24 rows" in text  # 3 batches x 4 x 2 ranks
    assert "3 micro-batches x 1 forward = 3 forwards per rank" in text
    assert "exact match before and after training: 6 held-out prompts" in text and "at most 60 forwards" in text
    off = compose_config(["method=lora", "train.exact_match_samples=0"], check=False)
    assert "exact match" not in describe_scoring(off, world=1, train_rows=100, eval_rows=60, total_steps=2, accum=1)
    assert describe_scoring(off, world=1, train_rows=100, eval_rows=0, total_steps=2, accum=1) is None
    assert "held-out loss" in scoring_plan(compose_config(["method=lora"], check=False))


def test_a_run_shows_the_held_out_loss_and_exact_match_passes(tmp_path, caplog):
    from recipes.sft import SFTRecipe
    from tests.recipe_runs import run_recipe

    caplog.set_level(logging.INFO, logger="launcher.train")
    run_recipe(SFTRecipe, tmp_path, ["method=lora", "data.max_samples=8", "data.eval_datasets=[]", "data.val_size=2",
                                     "train.micro_batch_size=2", "train.grad_accum=1", "train.max_steps=1",
                                     "train.eval_every=0", "train.exact_match_samples=2", "train.max_new_tokens=3",
                                     "logger=none"])
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("exact match before training: 2 prompts: 1 micro-batches x 3 forwards") for line in lines)
    assert any(line.startswith("exact match step 1: 2 prompts") and "s per forward" in line for line in lines), lines
    assert any(line.startswith("held-out loss before training: 2 rows: 1 micro-batches x 1 forwards") for line in lines), lines
    assert any(line.startswith("held-out loss step 1: 2 rows") and "s per forward" in line for line in lines), lines


def test_a_run_logs_each_scoring_pass(tmp_path, caplog):
    from recipes.dpo import RECIPE
    from tests.recipe_runs import run_recipe

    caplog.set_level(logging.INFO, logger="launcher.train")
    run_recipe(RECIPE, tmp_path, ["method=dpo_lora", "data=prefs", "data.max_samples=8", "data.eval_datasets=[]",
                       "data.val_size=2", "train.micro_batch_size=2", "train.grad_accum=1", "train.max_steps=1",
                       "train.eval_every=0", "train.exact_match_samples=0", "logger=none"])
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("held-out before training: 2 rows: 1 micro-batches x 2 forwards") for line in lines), lines
    assert any(line.startswith("train_pairs probe before training: 2 rows") for line in lines), lines  # 1 step x 2
    assert any("train_pairs probe step 1: 2 rows" in line and "s per forward" in line for line in lines), lines
