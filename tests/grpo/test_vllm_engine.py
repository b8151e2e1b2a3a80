"""The vLLM generation engine (generation.engine=vllm, launcher serve --engine vllm).

Without its venv (``make vllm-env``): the dry run and ``launcher serve --engine vllm`` refuse, naming that command;
the merged weights vLLM is given equal PEFT's own merge. With it: greedy completions of the tiny model equal the
transformers engine's token for token, before and after the weights change (full and LoRA), and a GRPO run on
vLLM trains with the weights pushed after every update. The tests that need vLLM skip, with the reason, where
its venv is absent.
"""
from __future__ import annotations

import pytest
import torch

from launcher.config.compose import compose_config
from launcher.errors import ConfigError, PreflightError
from launcher.inference.vllm_engine import INSTALL_COMMAND, plain_state_dict, vllm_python, weights_version

VLLM_PYTHON = vllm_python()
needs_vllm = pytest.mark.skipif(VLLM_PYTHON is None, reason=f"the vLLM venv is absent: `{INSTALL_COMMAND}` makes it")
PROMPTS = [[5, 9, 14, 3], [7, 7, 2], [30, 31, 32, 33, 34, 35], [11]]


def tiny_model(seed=0):
    from launcher.models.build import build_base_model
    from launcher.models.tokenizers import load_tokenizer

    cfg = compose_config([])
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(seed)
    return build_base_model(cfg, tokenizer, "sdpa", torch.float32).eval(), tokenizer


def test_config_refuses_vllm_where_it_cannot_serve():
    with pytest.raises(ConfigError, match="generation.engine: 'fast' is not one of transformers, vllm"):
        compose_config(["method=grpo", "generation.engine=fast"])
    with pytest.raises(ConfigError, match="method=sft_full generates no rollouts; vllm is for grpo, ppo"):
        compose_config(["generation.engine=vllm"])
    with pytest.raises(ConfigError, match="parallelism=zero3"):
        compose_config(["method=grpo", "parallelism=zero3", "generation.engine=vllm"])


def test_dry_run_refuses_vllm_without_its_venv(tmp_path):
    from launcher.checks.preflight import run_preflight

    cfg = compose_config(["method=grpo", "generation.engine=vllm", f"generation.vllm_python={tmp_path}/nope/python",
                          f"run.output_root={tmp_path}"])
    with pytest.raises(PreflightError, match=r"generation.engine=vllm: .*nope/python is not there; make it with"
                                             r" `make vllm-env`"):
        run_preflight(cfg)


def test_serve_refuses_vllm_without_its_venv(tmp_path, monkeypatch):
    from launcher.serve.cli import serve_main

    monkeypatch.setenv("LAUNCHER_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ConfigError, match="--engine vllm: .* make it with `make vllm-env`"):
        serve_main([str(tmp_path), "--engine", "vllm"])


def test_merged_lora_weights_equal_peft_merge_and_the_model_is_untouched():
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_model()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    state = plain_state_dict(peft_model)
    assert {k: v for k, v in peft_model.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in peft_model.state_dict().items())
    merged = peft_model.merge_and_unload().state_dict()
    assert set(state) == set(merged) - {"lm_head.weight"}  # tied: vLLM ties lm_head to the embedding itself
    for name, value in state.items():
        torch.testing.assert_close(value, merged[name], rtol=1e-5, atol=1e-6)


def test_the_weights_given_to_vllm_leave_out_ppos_value_head():
    """PPO's value head lives on the policy (left out of its saved files); vLLM gets the language model alone."""
    from launcher.training.objectives.ppo import attach_value_head

    model, _ = tiny_model()
    before = plain_state_dict(model)
    attach_value_head(model)
    assert any(name.startswith("v_head.") for name in model.state_dict())
    assert plain_state_dict(model).keys() == before.keys()


def test_weights_version_moves_with_an_optimizer_step():
    model, _ = tiny_model()
    version = weights_version(model)
    model(input_ids=torch.tensor([PROMPTS[0]])).logits.sum().backward()
    assert weights_version(model) == version  # a forward and backward leave it
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert weights_version(model) > version


# ---------------------------------------------------------------------------------------- with vLLM


def greedy(engine, prompts=PROMPTS, new=12):
    return engine.generate(prompts, 1, new, greedy=True).completions


@pytest.fixture(scope="module")
def engines():
    from launcher.inference.generation import eos_ids
    from launcher.inference.rollout import TransformersEngine
    from launcher.inference.vllm_engine import VLLMEngine

    model, tokenizer = tiny_model()
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    ours = TransformersEngine(model, pad, eos, torch.device("cpu"))
    theirs = VLLMEngine(model, pad, eos, VLLM_PYTHON, max_model_len=64)
    yield model, ours, theirs
    theirs.close()


@needs_vllm
def test_greedy_completions_equal_the_transformers_engine_token_for_token(engines):
    model, ours, theirs = engines
    expected = greedy(ours)
    assert greedy(theirs) == expected
    assert theirs.syncs == 0  # started with these weights
    # an optimizer update: the next generation pushes the new weights first, and still agrees
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    changed = greedy(ours)
    assert changed != expected
    assert greedy(theirs) == changed and theirs.syncs == 1
    assert greedy(theirs) == changed and theirs.syncs == 1  # no update, no push


@needs_vllm
def test_sampled_rollouts_are_reproducible_and_grouped(engines):
    _, _, theirs = engines
    gen = lambda: torch.Generator().manual_seed(123)  # noqa: E731
    a = theirs.generate(PROMPTS[:2], 3, 8, temperature=1.5, generator=gen())
    b = theirs.generate(PROMPTS[:2], 3, 8, temperature=1.5, generator=gen())
    assert a.completions == b.completions and len(a.completions) == 6
    assert all(1 <= len(c) <= 8 for c in a.completions)
    assert len({tuple(c) for c in a.completions}) > 1
    assert a.truncated == [len(c) == 8 and c[-1] not in theirs.eos for c in a.completions]


def assert_trains_on_vllm(recipe_class, cfg, run_dir, max_completion: int) -> None:
    """Train ``cfg`` (3 steps, one optimizer step per rollout) with generation.engine=vllm: every step generates on
    vLLM, the weights are pushed before the rollouts of steps 2 and 3, and afterwards vLLM's greedy completions
    equal the trained policy's own (transformers engine). Shared by the GRPO and PPO (tests/ppo) runs."""
    from launcher.engines.distributed import init_distributed
    from launcher.inference.rollout import TransformersEngine
    from launcher.launch.rundir import write_run_config
    from launcher.training.metrics import read_metrics

    write_run_config(run_dir, cfg)
    recipe = recipe_class(cfg, run_dir, init_distributed())
    recipe.setup()
    try:
        vllm = recipe.trainer.objective.generation
        assert vllm.name == "vllm"
        recipe.train()
        steps = read_metrics(run_dir, "train")
        assert [r["step"] for r in steps] == [1, 2, 3]
        assert all(r["time/generation"] > 0 and 1 <= r["completion_length"] <= max_completion for r in steps)
        assert vllm.syncs == 2  # pushed before the rollouts of steps 2 and 3
        ours = TransformersEngine(vllm.model, vllm.pad, vllm.eos, torch.device("cpu"))
        prompts = [r["prompt_ids"] for r in recipe.data.train[:4]]
        assert greedy(vllm, prompts, 6) == greedy(ours, prompts, 6)
    finally:
        recipe.cleanup()
        recipe.trainer.objective.generation.close()


@needs_vllm
def test_grpo_lora_on_vllm_trains_and_vllm_keeps_the_policys_weights(tmp_path):
    """method=grpo_lora with generation.engine=vllm: rollouts on vLLM, the merged weights pushed after each update;
    after training vLLM's greedy completions equal the trained policy's own (transformers engine)."""
    from launcher.launch.rundir import make_run_dir
    from recipes.grpo import GRPORecipe

    # the default tiny model: vLLM's CPU attention has no kernel for head_dim 16 (tests.rm.helpers.SMALL_MODEL)
    cfg = compose_config([f"run.output_root={tmp_path}", "method=grpo_lora", "data.max_samples=16",
                          "train.micro_batch_size=2", "train.log_every=1", "train.warmup_ratio=0",
                          "train.exact_match_samples=0", "train.max_steps=3", "method.lr=5e-2",
                          "method.grpo.num_generations=3", "method.grpo.max_completion_length=6",
                          "method.grpo.eval_prompts=0", "method.grpo.rewards=[length]", "generation.engine=vllm",
                          "data.cutoff_len=128"])
    assert_trains_on_vllm(GRPORecipe, cfg, make_run_dir(tmp_path, "grpo-vllm"), max_completion=6)
