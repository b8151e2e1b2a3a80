"""method=ppo with a reward model of method=rm: the per-step metrics it logs, the held-out score before and
after, an exact resume from a checkpoint taken in the middle of a generation batch (the same scores, losses and
final weights as the uninterrupted run), and a mean reward that rises on a task where the reward model is right
(tests/ppo/conftest.py; tests/benchmarks/demo_ppo.py runs it longer)."""
from __future__ import annotations

import json

import pytest

from launcher.config.compose import compose_config
from launcher.engines import checkpoint as ckpt
from launcher.engines.distributed import init_distributed
from launcher.launch.rundir import make_run_dir, write_run_config
from launcher.training.metrics import read_metrics
from recipes.ppo import PPORecipe
from tests.ppo.conftest import ppo_data
from tests.resume.helpers import assert_same_weights, final_weights, raw_train_steps

STEPS = 4


class StopAt:
    """Stands in for the preemption signal: every rank 'receives' it once the recipe reaches ``step``."""

    def __init__(self, recipe, step):
        self.recipe, self.step = recipe, step

    def requested(self) -> bool:
        return self.recipe.step >= self.step


def ppo_overrides(folder, rm_dir) -> list:
    return ["method=ppo", *ppo_data(folder), f"method.ppo.reward_model={rm_dir}", "data.max_samples=16",
            "train.micro_batch_size=4", "train.log_every=1", "train.warmup_ratio=0", f"train.max_steps={STEPS}",
            "method.lr=3e-3", "method.ppo.max_completion_length=4", "method.ppo.ppo_epochs=2",
            "method.ppo.eval_prompts=4", "method.ppo.kl_coef=0.1", "method.ppo.temperature=1.5"]


def train(root, name, overrides, stop_at=None):
    cfg = compose_config([f"run.output_root={root}", *overrides])
    run_dir = make_run_dir(root, name)
    write_run_config(run_dir, cfg)

    def attempt(stop):
        recipe = PPORecipe(cfg, run_dir, init_distributed())
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
def straight(tmp_path_factory, digits_task):
    folder, rm_dir, _ = digits_task
    return train(tmp_path_factory.mktemp("ppo"), "straight", ppo_overrides(folder, rm_dir))


def test_ppo_logs_rewards_kl_values_and_the_time_split_per_step(straight):
    run_dir, (summary,) = straight
    steps = read_metrics(run_dir, "train")
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for r in steps:
        for key in ("reward", "reward_std", "kl", "entropy", "policy_loss", "value_loss", "clip_ratio",
                    "value_clip_ratio", "approx_kl", "advantage_std", "completion_length", "rlhf_reward",
                    "time/generation", "time/scoring", "time/update"):
            assert key in r, key
        assert 1 <= r["completion_length"] <= 4 and r["entropy"] > 0 and r["value_loss"] > 0
        assert r["rlhf_reward"] == pytest.approx(r["reward"] - 0.1 * r["kl"])
    # a generation batch trains ppo_epochs=2 steps: completions sampled at steps 1 and 3 only
    assert [r["time/generation"] > 0 for r in steps] == [True, False, True, False]
    assert [r["reward"] for r in steps][0::2] == [r["reward"] for r in steps][1::2]
    # the first step of a batch is on the sampling policy (ratio 1, nothing clipped); the second has moved
    assert steps[0]["approx_kl"] == pytest.approx(0.0, abs=1e-10) and steps[1]["approx_kl"] > 0
    assert steps[2]["kl"] != 0  # the policy has left the reference by the second rollout
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert set(before) >= {"eval/reward", "eval/exact_match", "eval/completion_length"} and set(after) == set(before)
    # the saved policy is a plain causal LM: no value head in it
    model_dir = run_dir / "model"
    assert (run_dir / "loss.png").is_file() and (model_dir / "model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(model_dir / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "v_head" in k]
    assert "ForCausalLM" in json.loads((model_dir / "config.json").read_text())["architectures"][0]


def test_ppo_resumes_mid_generation_batch_exactly(straight, digits_task, output_root):
    ref_dir, _ = straight
    folder, rm_dir, _ = digits_task
    run_dir, (first, second) = train(output_root, "resumed", [*ppo_overrides(folder, rm_dir), "train.save_every=1"],
                                     stop_at=1)
    assert first["preempted"] and first["final_step"] == 1
    # step 1 is the middle of the first generation batch: its rows are in the checkpoint
    assert (ckpt.latest_checkpoint(run_dir) / ckpt.objective_file(0)).is_file()
    assert second["final_step"] == STEPS
    assert raw_train_steps(run_dir) == list(range(1, STEPS + 1))
    for a, b in zip(read_metrics(ref_dir, "train"), read_metrics(run_dir, "train")):
        for key in ("loss", "reward", "kl", "value_loss", "policy_loss", "completion_length", "clip_ratio"):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    assert_same_weights(final_weights(run_dir), final_weights(ref_dir))


LEARN_STEPS, LEARN_EPOCHS = 32, 4


def learning_overrides(folder, rm_dir) -> list:
    """The settings of the rise below (and of tests/benchmarks/demo_ppo.py, which runs them longer)."""
    return ["method=ppo", *ppo_data(folder), f"method.ppo.reward_model={rm_dir}", "train.micro_batch_size=8",
            "train.log_every=1", "train.warmup_ratio=0", "train.lr_scheduler=constant", "train.save_model=false",
            "method.lr=2e-2", "method.ppo.max_completion_length=6", f"method.ppo.ppo_epochs={LEARN_EPOCHS}",
            "method.ppo.kl_coef=0.0", "method.ppo.eval_prompts=8"]


def test_ppo_mean_reward_rises_where_the_reward_model_is_right(digits_task, output_root):
    folder, rm_dir, rm_summary = digits_task
    # the reward model is right on the task: it ranks held-out digit answers above vowel ones
    assert rm_summary["rewards_after"]["eval/rewards/accuracy"] >= 0.9
    run_dir, (summary,) = train(output_root, "learns", [*learning_overrides(folder, rm_dir),
                                                        f"train.max_steps={LEARN_STEPS}"])
    rollouts = [r["reward"] for r in read_metrics(run_dir, "train")][::LEARN_EPOCHS]  # one per generation batch
    assert len(rollouts) == LEARN_STEPS // LEARN_EPOCHS
    first, last = sum(rollouts[:2]) / 2, sum(rollouts[-2:]) / 2
    before, after = summary["held_out_before"]["eval/reward"], summary["held_out_after"]["eval/reward"]
    print(f"\nPPO: mean reward of the first two rollouts {first:.3f}, of the last two {last:.3f}; held-out"
          f" (greedy) {before:.3f} -> {after:.3f}")
    assert last > first + 0.2
    assert after > before + 0.25


def test_ppo_lora_trains_adapters_and_value_head_against_the_base(digits_task, output_root):
    folder, rm_dir, _ = digits_task
    extra = ["method=ppo_lora", "train.max_steps=2", "method.lr=1e-2", "method.ppo.eval_prompts=0"]
    cfg_overrides = [o for o in ppo_overrides(folder, rm_dir) if not o.startswith(("method=", "train.max_steps"))]
    cfg = compose_config([f"run.output_root={output_root}", *cfg_overrides, *extra])
    run_dir = make_run_dir(output_root, "lora")
    write_run_config(run_dir, cfg)
    recipe = PPORecipe(cfg, run_dir, init_distributed())
    recipe.setup()
    head = recipe.trainer.engine.model.get_base_model().v_head
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    steps = read_metrics(run_dir, "train")
    assert len(steps) == 2 and steps[1]["approx_kl"] > 0 and steps[1]["value_loss"] < steps[0]["value_loss"]
    assert head.weight.requires_grad and head.weight.abs().sum() > 0  # it trained from zero
    model_dir = run_dir / "model"
    assert (model_dir / "adapter_config.json").is_file()
    from safetensors import safe_open

    with safe_open(model_dir / "adapter_model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "v_head" in k]
