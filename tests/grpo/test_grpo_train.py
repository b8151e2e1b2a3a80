"""method=grpo trains on its own completions: the per-step metrics it logs, the held-out reward before and
after, and an exact resume from a checkpoint taken in the middle of a generation batch (the same rewards, losses
and final weights as the uninterrupted run). A small random-init model and a few steps: behaviour, not learning
(tests/benchmarks/demo_grpo.py shows it learning)."""
from __future__ import annotations

import pytest

from launcher.config.compose import compose_config
from launcher.engines import checkpoint as ckpt
from launcher.engines.distributed import init_distributed
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.metrics import read_metrics
from recipes.grpo import GRPORecipe
from tests.resume.helpers import assert_same_weights, final_weights, raw_train_steps
from tests.rm.helpers import SMALL_MODEL

STEPS = 4
GRPO = [
    "method=grpo", *SMALL_MODEL, "data.max_samples=16", "train.micro_batch_size=2", "train.log_every=1",
    "train.warmup_ratio=0", "train.exact_match_samples=0", f"train.max_steps={STEPS}", "method.lr=3e-3",
    "method.grpo.num_generations=3", "method.grpo.max_completion_length=4", "method.grpo.num_iterations=2",
    "method.grpo.eval_prompts=4", "method.grpo.beta=0.1", "method.grpo.temperature=1.5",
    "method.grpo.rewards=[tests.grpo.rewards_for_tests:first_char_is_digit,length,exact_match]",
    "method.grpo.reward_weights=[1.0,0.5,1.0]", "method.grpo.length_target=2",
]


class StopAt:
    """Stands in for the preemption signal: every rank 'receives' it once the recipe reaches ``step``."""

    def __init__(self, recipe, step):
        self.recipe, self.step = recipe, step

    def requested(self) -> bool:
        return self.recipe.step >= self.step


def train(root, name, extra=(), stop_at=None):
    cfg = compose_config([f"run.output_root={root}", *GRPO, *extra])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)

    def attempt(stop):
        recipe = GRPORecipe(cfg, run_dir, init_distributed())
        recipe.setup()
        if stop is not None:
            recipe.stop_flag = StopAt(recipe, stop)
        try:
            return recipe.train()
        finally:
            recipe.cleanup()

    summaries = [attempt(stop_at)] if stop_at is not None else []
    summaries.append(attempt(None))
    return run_dir, summaries


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train(tmp_path_factory.mktemp("grpo"), "straight")


def test_grpo_logs_rewards_kl_and_the_time_split_per_step(straight):
    run_dir, (summary,) = straight
    steps = read_metrics(run_dir, "train")
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for r in steps:
        for key in ("reward", "reward_std", "kl", "entropy", "clip_ratio", "advantage_std", "completion_length",
                    "rewards/length", "rewards/exact_match", "time/generation", "time/scoring", "time/update"):
            assert key in r, key
        assert 1 <= r["completion_length"] <= 4 and r["entropy"] > 0
        total = r["rewards/tests.grpo.rewards_for_tests:first_char_is_digit"] + 0.5 * r["rewards/length"] + \
            r["rewards/exact_match"]
        assert r["reward"] == pytest.approx(total)
    # a generation batch trains num_iterations=2 steps: completions sampled at steps 1 and 3 only
    assert [r["time/generation"] > 0 for r in steps] == [True, False, True, False]
    assert [r["reward"] for r in steps][0::2] == [r["reward"] for r in steps][1::2]
    # the second step of a batch moves away from the sampling policy and the reference
    assert steps[1]["kl"] > 0
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert set(before) >= {"eval/reward", "eval/exact_match", "eval/completion_length"} and set(after) == set(before)
    assert (run_dir / "loss.png").is_file() and (run_dir / "model" / "model.safetensors").is_file()


def test_grpo_resumes_mid_generation_batch_exactly(straight, output_root):
    ref_dir, _ = straight
    run_dir, (first, second) = train(output_root, "resumed", ["train.save_every=1"], stop_at=1)
    assert first["preempted"] and first["final_step"] == 1
    # step 1 is the middle of the first generation batch: its completions are in the checkpoint
    assert (ckpt.latest_checkpoint(run_dir) / ckpt.objective_file(0)).is_file()
    assert second["final_step"] == STEPS
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1))
    for a, b in zip(read_metrics(ref_dir, "train"), read_metrics(run_dir, "train")):
        for key in ("loss", "reward", "kl", "rewards/length", "completion_length", "clip_ratio"):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    assert_same_weights(final_weights(run_dir), final_weights(ref_dir))
