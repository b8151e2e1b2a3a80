"""Each prompt is computed once for its group of completions, in the rollout (its KV cache repeated for the G
completions) and in the update (its cache, with its gradient, shared by the group's rows): the same log-probs,
gradients and greedy completions as computing every row in full."""
from __future__ import annotations

import torch

from launcher.config.compose import compose_config
from launcher.inference.rollout import TransformersEngine
from launcher.models.build import build_base_model
from launcher.models.tokenizers import load_tokenizer
from launcher.training.objectives.grpo import CompletionLogProbs, collate_completions
from tests.rm.helpers import SMALL_MODEL


def tiny():
    cfg = compose_config(["method=grpo", *SMALL_MODEL])
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    return build_base_model(cfg, tokenizer, "sdpa", torch.float32).eval()


def test_shared_prompt_log_probs_and_gradients_equal_the_full_forward():
    model = tiny()
    prompts = [[1, 40, 41, 42, 43, 44, 45], [1, 50, 51, 52]]  # different lengths: left padding
    completions = [[60, 61, 2], [62], [63, 64, 65, 66], [70, 2], [71, 72, 73], []]
    rows = [{"prompt_ids": prompts[k // 3], "completion_ids": c, "advantage": 0.0, "rewards": [0.0], "reward": 0.0,
             "truncated": False, "group_std": 0.0} for k, c in enumerate(completions)]
    batch = collate_completions(rows, pad_id=0)
    assert batch["prompt_groups"].tolist() == [0, 0, 0, 1, 1, 1]
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "completion_ids", "prompt_groups")}
    mask = batch["completion_mask"]
    results = []
    for share in (False, True):
        model.zero_grad()
        logps, entropy = CompletionLogProbs(model, share_prompts=share)(**args)
        (logps * mask).sum().backward()
        grads = torch.cat([p.grad.view(-1) for p in model.parameters()])
        results.append((logps * mask, entropy * mask, grads))
    (full_lp, full_ent, full_grad), (lp, ent, grad) = results
    torch.testing.assert_close(lp, full_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, full_ent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, full_grad, rtol=1e-4, atol=1e-6)


def test_rollout_reads_each_prompt_once_and_gives_the_same_completions():
    model = tiny()
    engine = TransformersEngine(model, 0, [2], torch.device("cpu"))
    prompts = [[1, 40, 41, 42, 43, 44, 45], [1, 50, 51, 52]]
    grouped = engine.generate(prompts, 3, 6, greedy=True)
    one_by_one = engine.generate([p for p in prompts for _ in range(3)], 1, 6, greedy=True)
    assert grouped.completions == one_by_one.completions and len(grouped.completions) == 6
    sampled = engine.generate(prompts, 3, 6, generator=torch.Generator().manual_seed(0))
    again = engine.generate([p for p in prompts for _ in range(3)], 1, 6, generator=torch.Generator().manual_seed(0))
    assert sampled.completions == again.completions and sampled.truncated == again.truncated


def test_log_probs_are_the_sampling_distributions_at_the_rollout_temperature():
    """As TRL's GRPOTrainer: the loss scores each completion token under the tempered distribution it was sampled
    from (logits / method.grpo.temperature), for the policy and for a frozen reference."""
    from launcher.training.objectives.grpo import GRPOObjective, completion_reference

    model = tiny()
    cfg = compose_config(["method=grpo", *SMALL_MODEL, "method.grpo.temperature=0.5"])
    rows = [{"prompt_ids": [1, 40, 41, 42], "completion_ids": c, "advantage": 0.0, "rewards": [0.0], "reward": 0.0,
             "truncated": False, "group_std": 0.0} for c in ([60, 61, 2], [62, 2])]
    batch = collate_completions(rows, pad_id=0)
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "completion_ids", "prompt_groups")}
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[:, -4:-1].float()
    tempered = (logits / 0.5).log_softmax(-1)
    expected = tempered.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    mask = batch["completion_mask"]
    logps, entropy = GRPOObjective.loss_module(None, model, cfg)(**args)
    torch.testing.assert_close(logps * mask, expected * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy * mask, -(tempered.exp() * tempered).sum(-1) * mask, rtol=1e-5, atol=1e-5)
    reference = completion_reference(None, model, temperature=cfg.method.grpo.temperature)(batch)
    torch.testing.assert_close(reference * mask, expected * mask, rtol=1e-5, atol=1e-5)

    # PPO's policy module does the same (TRL's PPOTrainer divides by the temperature too)
    from types import SimpleNamespace

    from launcher.training.objectives.ppo import PPOObjective, attach_value_head

    ppo_cfg = compose_config(["method=ppo", *SMALL_MODEL, "method.ppo.temperature=0.5"])
    attach_value_head(model)
    policy = PPOObjective.loss_module(SimpleNamespace(p=ppo_cfg.method.ppo), model, ppo_cfg)
    ppo_logps, ppo_entropy, _ = policy(**{k: v for k, v in args.items() if k != "prompt_groups"})
    torch.testing.assert_close(ppo_logps * mask, expected * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ppo_entropy * mask, -(tempered.exp() * tempered).sum(-1) * mask, rtol=1e-5, atol=1e-5)
