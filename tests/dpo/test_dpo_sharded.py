"""DPO under ZeRO-3 and FSDP on 2 CPU ranks (torchrun, gloo): scoring, the reference precompute and the probes
are collective-safe, and full DPO keeps no unsharded reference copy.

3 held-out pairs, 3 probe pairs and 12 training pairs at micro-batch size 1: rank 0 holds 2 held-out batches,
rank 1 one, and the precompute splits the training pairs 6/6 but the held-out ones 2/1. Sharded forwards are
collectives, so without filler forwards rank 0 waits for rank 1 until the process-group timeout (30 min); the
test gives the run 400 s. The held-out metrics at step 0 (the initial weights, same seed) must equal a
single-process run's: a filler forward that was counted would change the mean.
"""
from __future__ import annotations

import pytest

from tests.dpo.helpers import SMALL_MODEL, run_dpo
from tests.recipe_runs import records, torchrun_recipe

UNEVEN = ["data=prefs", "data.eval_datasets=[]", "data.val_size=3", "data.max_samples=15", "method.dpo.probe_pairs=3",
          "train.micro_batch_size=1", "train.grad_accum=1", "train.max_steps=2", "train.log_every=1",
          "train.eval_every=0", "train.warmup_ratio=0", "train.exact_match_samples=0", "train.save_model=false",
          *SMALL_MODEL]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """Step-0 held-out metrics of the same data and initial weights, one process (no collectives)."""
    # 3 steps of one pair: the probe (never more pairs than the run trains on) holds the same 3 pairs as the
    # 2-rank runs' 2 steps of 2
    _, run_dir, _ = run_dpo(tmp_path_factory.mktemp("dpo1"), [*UNEVEN, "train.max_steps=3"], name="one")
    return records(run_dir, "eval")[0]


@pytest.mark.parametrize("parallelism,method", [("zero3", "dpo"), ("fsdp", "dpo"), ("fsdp", "dpo_lora")])
def test_uneven_pairs_on_two_sharded_ranks_finish(tmp_path, single_process, parallelism, method):
    run_dir = torchrun_recipe("recipes.dpo", tmp_path, [*UNEVEN, f"parallelism={parallelism}", f"method={method}"],
                              f"{parallelism}-{method}")
    evals = records(run_dir, "eval")
    assert [e["step"] for e in evals] == [0, 2]
    for key in ("eval/logps/chosen", "eval/logps/rejected", "train_pairs/logps/chosen"):
        assert evals[0][key] == pytest.approx(single_process[key], rel=1e-5), key
    log = (run_dir / "stderr.log").read_text()
    if method == "dpo":
        # Full DPO under a sharded engine: the reference is precomputed, never an unsharded copy per rank.
        assert "instead of keeping an unsharded frozen copy" in log
        assert "reference log-probs precomputed for 12 training pairs" in log
        assert evals[0]["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 0
    print(f"\n{parallelism} {method}: 3 held-out pairs (2+1 per rank) scored, step-0 eval/logps/chosen "
          f"{evals[0]['eval/logps/chosen']:.4f} == single process {single_process['eval/logps/chosen']:.4f}")
