"""PPO objective: rollouts, the reward model's scores, per-token rewards, values and GAE at the start of each
generation batch, then the clipped policy and value losses (launcher.training.ppo_loss, TRL's formulas).

The value head: one linear layer (hidden -> 1) on the policy's last hidden states, attached to the policy model
as ``v_head`` (as TRL's AutoModelForCausalLMWithValueHead, which LLaMA-Factory's PPO uses) rather than a
separate value model initialised from the reward model (TRL's newer PPOTrainer). Why: one backbone in memory
instead of two, and one module under one engine and one optimizer, so DDP, ZeRO-3 and FSDP shard, checkpoint
and resume it with the policy with nothing added; the cost is that the value loss shapes the shared backbone
(vf_coef keeps it small, as TRL's default 0.1). It starts at zero (every value 0, on every rank and engine);
``save_pretrained`` leaves it out of the saved model (``_keys_to_ignore_on_save``), which stays a plain causal
LM (or the plain LoRA adapter).

Per generation batch (every ``method.ppo.ppo_epochs`` optimizer steps) each rank takes its prompts of the step
from the Trainer's data plan, samples one completion per prompt (launcher.inference.rollout, the same path as
GRPO; the weights gathered for the call under ZeRO-3/FSDP), scores prompt + completion with the reward model
(launcher.training.rewards' ``rm:RUN_DIR`` reward), and runs the policy (log-probs, values) and the reference
once over the completions. Each completion's per-token rewards and GAE advantages are its own; the advantages
are whitened over every completion token of the generation batch on all ranks (their moments all-reduced), so
one process and N ranks see the same advantages. The rollout's random draws come from a generator seeded by
(train.seed, generation batch, rank), and the current generation batch's rows are part of the checkpoint
(``state_dict``): a run resumed at any step trains on exactly the completions the uninterrupted run did.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from launcher.engines.distributed import all_reduce_sum
from launcher.training.loss import backbone_hidden
from launcher.training.objectives.base import first_and_last_eval, forwards_for, to_device
from launcher.training.objectives.generation_batches import GenerationBatchObjective
from launcher.training.ppo_loss import gae, masked_moments, policy_loss, token_rewards, value_loss, whiten
from launcher.training.reward_model_run import reward_model_run_dir
from launcher.training.rewards import Completion, RewardModelReward, score_completions

log = logging.getLogger("launcher.ppo")

VALUE_HEAD = "v_head"
STAT_KEYS = ("loss", "completions", "completion_tokens", "policy_loss", "value_loss", "policy_clipped",
             "value_clipped", "entropy", "approx_kl", "score", "score_sq", "kl", "non_score_reward", "truncated",
             "value", "returns", "advantage", "advantage_sq")
"""Per-step sums (float64), in this order."""


# ------------------------------------------------------------------------------------------ the reward model


class RunRewardModel(RewardModelReward):
    """The ``rm:RUN_DIR`` reward (prompt text + completion text, scored at the last non-pad token), loaded with
    the reward model's own saved tokenizer: the text is tokenized as the reward model was trained."""

    def __init__(self, run_dir: Path, device):
        from launcher.inference.trained import load_trained_model

        self.name = f"rm:{run_dir}"
        model, self.tokenizer = load_trained_model(run_dir, device=device)
        self.model = model.eval().requires_grad_(False)
        self.device = device


def load_reward_model(cfg, device) -> RunRewardModel:
    return RunRewardModel(reward_model_run_dir(cfg.method.ppo.reward_model), device)


# ------------------------------------------------------------------------------------------ the value head


def value_head_owner(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attach_value_head(model: nn.Module) -> nn.Module:
    """Add ``v_head`` (hidden -> 1) to the policy, trainable, left out of ``save_pretrained``."""
    owner = value_head_owner(model)
    config = owner.config.get_text_config() if hasattr(owner.config, "get_text_config") else owner.config
    weight = owner.get_output_embeddings().weight
    head = nn.Linear(config.hidden_size, 1, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        if weight.device.type != "meta":
            head.weight.zero_()
            head.bias.zero_()
    owner.add_module(VALUE_HEAD, head)
    owner._keys_to_ignore_on_save = set(owner._keys_to_ignore_on_save or ()) | {f"{VALUE_HEAD}.weight",
                                                                                 f"{VALUE_HEAD}.bias"}
    return head


@torch.no_grad()
def zero_value_head(engine, model: nn.Module) -> None:
    """Set the value head to zero on every rank, whatever the engine did at build (FSDP's meta build
    initialises it as any new layer): the same start under every engine. A checkpoint loaded later replaces it."""
    head = getattr(value_head_owner(model), VALUE_HEAD)
    params = list(head.parameters())
    if getattr(engine, "zero_stage", 0) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            for p in params:
                p.zero_()
        return
    for p in params:
        p.zero_()


class PolicyAndValue(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, completion_ids)`` -> (log p of each completion token
    [B, C], its entropy [B, C] (no gradient), the value of the state before each completion token [B, C]).
    One backbone pass; only the C completion positions go through the LM head and the value head.

    What the engine wraps for PPO (DDP / FSDP / DeepSpeed see an ordinary module). The logits are divided by
    ``temperature``, the rollouts' sampling temperature, as TRL's PPOTrainer does: the ratio and the KL then
    compare the distribution the completions were sampled from."""

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, input_ids, attention_mask, position_ids, completion_ids, **_unused):
        c = completion_ids.shape[1]
        hidden = backbone_hidden(self.model, input_ids, attention_mask, position_ids, {})[:, -c - 1:-1]
        logps = (self.model.get_output_embeddings()(hidden).float() / self.temperature).log_softmax(-1)
        token_logps = logps.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            entropy = -(logps.exp() * logps).sum(-1)
        head = getattr(value_head_owner(self.model), VALUE_HEAD)
        values = head(hidden.to(head.weight.dtype)).squeeze(-1).float()
        return token_logps, entropy, values


def collate_rollout(rows: list, pad_id: int) -> dict:
    """Completion rows -> one batch: the prompt left-padded, the completion right-padded after it; the per-token
    fields of the rollout (old log-probs and values, advantages, returns) right-padded with 0."""
    p = max(len(r["prompt_ids"]) for r in rows)
    c = max(max(len(r["completion_ids"]) for r in rows), 1)
    n = len(rows)
    ids = torch.full((n, p + c), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p + c), dtype=torch.long)
    comp = torch.full((n, c), pad_id, dtype=torch.long)
    cmask = torch.zeros((n, c), dtype=torch.float32)
    per_token = {k: torch.zeros((n, c), dtype=torch.float32)
                 for k in ("old_logps", "old_values", "ref_logps", "advantages", "returns") if k in rows[0]}
    for i, r in enumerate(rows):
        pr, co = r["prompt_ids"], r["completion_ids"]
        ids[i, p - len(pr):p] = torch.tensor(pr, dtype=torch.long)
        mask[i, p - len(pr):p] = 1
        if co:
            ids[i, p:p + len(co)] = torch.tensor(co, dtype=torch.long)
            mask[i, p:p + len(co)] = 1
            comp[i, :len(co)] = torch.tensor(co, dtype=torch.long)
            cmask[i, :len(co)] = 1
            for k, t in per_token.items():
                t[i, :len(co)] = torch.tensor(r[k], dtype=torch.float32)
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
             "completion_ids": comp, "completion_mask": cmask, **per_token}
    for k in ("score", "kl_sum", "non_score_reward", "truncated"):
        if k in rows[0]:
            batch[k] = torch.tensor([float(r[k]) for r in rows], dtype=torch.float64)
    return batch


class PPOObjective(GenerationBatchObjective):
    name = "ppo"
    stat_keys = STAT_KEYS

    def __init__(self, data, cfg, tokenizer, reward_model: RunRewardModel, pad_token_id: int):
        self.data, self.cfg, self.p = data, cfg, cfg.method.ppo
        self.tokenizer = tokenizer
        self.reward_model = reward_model
        self.pad_id = pad_token_id
        self.scorer: Optional[nn.Module] = None
        """The policy's PolicyAndValue without wrappers (set once the engine is built)."""
        self.reference: Optional[Callable[[dict], torch.Tensor]] = None
        """batch -> the reference's per-token log-probs [B, C] (kl_coef > 0 only)."""
        self.generation = None
        """The GenerationEngine of the rollouts (launcher.inference.rollout)."""
        self.collective = False
        """The engine's forwards are collective (ZeRO-3, FSDP): every rank runs as many."""
        self.optimizer_steps_per_batch = self.p.ppo_epochs
        self.init_generation_batches()

    # ------------------------------------------------------------------------------------ the Trainer's hooks

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        return PolicyAndValue(model, temperature=self.p.temperature)

    def collate(self, rows: list) -> dict:
        return collate_rollout(rows, self.pad_id)

    # ------------------------------------------------------------------------------------ rollouts

    def scores(self, prompt_rows: list, completions: list[list[int]], truncated: list[bool]) -> torch.Tensor:
        """The reward model's score of each prompt + completion ([N] float64), less missing_eos_penalty for a
        completion cut without an end token."""
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        items = [Completion(prompt_rows[k], texts[k], len(completions[k]), truncated[k])
                 for k in range(len(completions))]
        table, _ = score_completions([(self.reward_model, 1.0)], items, "raise")
        out = table[:, 0]
        if self.p.missing_eos_penalty is not None:
            out = out - self.p.missing_eos_penalty * torch.tensor([float(t) for t in truncated], dtype=out.dtype)
        return out

    @torch.no_grad()
    def rollout(self, trainer, index: int, micro_rows: list[list]) -> list[list]:
        p, dist = self.p, trainer.dist
        t0 = time.monotonic()
        prompt_rows = [r for rows in micro_rows for r in rows]
        generator = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + index * 7919 + dist.rank)
        out = self.generation.generate([r["prompt_ids"] for r in prompt_rows], 1, p.max_completion_length,
                                       temperature=p.temperature, top_p=p.top_p, generator=generator)
        t1 = time.monotonic()
        scores = self.scores(prompt_rows, out.completions, out.truncated) if prompt_rows else torch.zeros(0)
        rows = [{"prompt_ids": r["prompt_ids"], "completion_ids": c, "input_ids": r["prompt_ids"] + c,
                 "score": float(s), "truncated": t}
                for r, c, s, t in zip(prompt_rows, out.completions, scores.tolist(), out.truncated)]
        per_micro = len(micro_rows[0]) if micro_rows else 0
        batches = [rows[i:i + per_micro] for i in range(0, len(rows), per_micro)] if per_micro else []
        self._advantages(trainer, batches)
        self._times = {"generation": t1 - t0, "scoring": time.monotonic() - t1}
        return batches

    def _advantages(self, trainer, batches: list[list]) -> None:
        """Per row: the policy's log-probs and values and the reference's log-probs (one forward each per
        micro-batch), per-token rewards, GAE; then the advantages whitened over the whole generation batch."""
        p, device = self.p, trainer.dist.device
        self.scorer.eval()
        done = []
        for rows in batches:
            batch = to_device(self.collate(rows), device)
            with trainer.precision.autocast():
                logps, _, values = self.scorer(**batch)
                ref = self.reference(batch) if self.reference is not None else None
            mask = batch["completion_mask"]
            logps, values = logps.float() * mask, values.float() * mask
            ref = ref.float() * mask if ref is not None else None
            rewards, kl = token_rewards(logps, ref, batch["score"], mask, p.kl_coef)
            done.append((rows, mask, logps, values, ref, rewards, kl))
        self.scorer.train()
        if p.whiten_rewards:
            moments = self._moments([(r, m) for _, m, _, _, _, r, _ in done], device)
            done = [(rows, m, lp, v, ref, whiten(r, m, moments, shift_mean=False), kl)
                    for rows, m, lp, v, ref, r, kl in done]
        gaes = [gae(r, v, m, p.gamma, p.lam) for _, m, _, v, _, r, _ in done]
        moments = self._moments([(a, m) for (a, _), (_, m, *_rest) in zip(gaes, done)], device)
        for (adv, ret), (rows, m, lp, v, ref, rewards, kl) in zip(gaes, done):
            adv = whiten(adv, m, moments)
            for i, r in enumerate(rows):
                n = len(r["completion_ids"])
                r.update(old_logps=lp[i, :n].cpu().tolist(), old_values=v[i, :n].cpu().tolist(),
                         advantages=adv[i, :n].cpu().tolist(), returns=ret[i, :n].cpu().tolist(),
                         kl_sum=float(kl[i].sum()), non_score_reward=float((-p.kl_coef * kl[i]).sum()))

    @staticmethod
    def _moments(pairs: list, device) -> torch.Tensor:
        """masked_moments over this rank's micro-batches, summed over ranks (collective)."""
        total = torch.zeros(3, dtype=torch.float64, device=device)
        for values, mask in pairs:
            total += masked_moments(values, mask).to(device)
        all_reduce_sum(total)
        return total.cpu()

    # ------------------------------------------------------------------------------------ the loss

    def normalizers(self, batches: list[dict]) -> list[float]:
        return [sum(float(b["completion_mask"].sum()) for b in batches)]

    def micro_batch_loss(self, module, batch, counts, world_size):
        p = self.p
        logps, entropy, values = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        position_ids=batch["position_ids"], completion_ids=batch["completion_ids"])
        mask = batch["completion_mask"]
        pg, pg_clipped = policy_loss(logps, batch["old_logps"], batch["advantages"], p.cliprange)
        vf, vf_clipped = value_loss(values, batch["old_values"], batch["returns"], p.cliprange_value)
        # the masked mean over every completion token of the step (all micro-batches, all ranks), as TRL's
        # masked_mean over its (single) mini-batch
        share = ((pg + p.vf_coef * vf) * mask).sum() / max(float(counts[0]), 1.0)
        # DDP averages gradients over ranks; the world-size factor makes the step's loss the sum of the shares.
        loss = share * world_size
        m = mask.double()
        with torch.no_grad():
            approx_kl = 0.5 * (logps.detach() - batch["old_logps"]).double() ** 2
            adv = batch["advantages"].double()
            stats = [share.detach().double(), torch.tensor(float(mask.shape[0]), dtype=torch.float64), m.sum(),
                     (pg.detach().double() * m).sum(), (vf.detach().double() * m).sum(),
                     (pg_clipped.double() * m).sum(), (vf_clipped.double() * m).sum(), (entropy.double() * m).sum(),
                     (approx_kl * m).sum(), batch["score"].sum(), (batch["score"] ** 2).sum(), batch["kl_sum"].sum(),
                     batch["non_score_reward"].sum(), batch["truncated"].sum(),
                     (batch["old_values"].double() * m).sum(), (batch["returns"].double() * m).sum(),
                     (adv * m).sum(), (adv ** 2 * m).sum()]
        return loss, torch.stack([v.to(m.device) for v in stats])

    def step_metrics(self, sums, counts) -> dict:
        s = dict(zip(self.stat_keys, sums.tolist()))
        n, tokens = max(s["completions"], 1.0), max(s["completion_tokens"], 1.0)
        score_std = max(s["score_sq"] / n - (s["score"] / n) ** 2, 0.0) ** 0.5
        adv_std = max(s["advantage_sq"] / tokens - (s["advantage"] / tokens) ** 2, 0.0) ** 0.5
        out = {"loss": s["loss"], "trained_tokens": int(s["completion_tokens"]),
               "reward": s["score"] / n, "reward_std": score_std,
               "kl": s["kl"] / n, "non_score_reward": s["non_score_reward"] / n,
               "rlhf_reward": (s["score"] + s["non_score_reward"]) / n,
               "policy_loss": s["policy_loss"] / tokens, "value_loss": s["value_loss"] / tokens,
               "clip_ratio": s["policy_clipped"] / tokens, "value_clip_ratio": s["value_clipped"] / tokens,
               "entropy": s["entropy"] / tokens, "approx_kl": s["approx_kl"] / tokens,
               "value_mean": s["value"] / tokens, "returns_mean": s["returns"] / tokens,
               "advantage_std": adv_std, "completion_length": s["completion_tokens"] / n,
               "truncated_ratio": s["truncated"] / n}
        # rank 0's clock: generation and scoring (reward model, log-probs, values) of this step's rollout; the
        # rest is the update
        out["time/generation"] = self._times["generation"]
        out["time/scoring"] = self._times["scoring"]
        out["time/update"] = time.monotonic() - self._prepared_at
        return out

    def extra_train_metrics(self, stats: dict) -> dict:
        skip = {"loss", "trained_tokens", "lr", "grad_norm", "tokens", "attended_pairs"}
        return {k: v for k, v in stats.items() if k not in skip}

    # ------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def held_out(self, trainer, rows: list) -> dict:
        """Greedy completions of ``rows`` scored by the reward model (each rank its share), with the exact-match
        rate where rows have answers. Collective."""
        from launcher.training.batching import eval_batches

        dist = trainer.dist
        sums = torch.zeros(4, dtype=torch.float64, device=dist.device)  # score, rows, tokens, exact matches
        answered = torch.zeros(1, dtype=torch.float64, device=dist.device)
        batches = eval_batches(len(rows), dist.rank, dist.world_size, self.cfg.train.micro_batch_size)
        for idx, counted in forwards_for(batches, self.collective, dist.device):
            part = [rows[i] for i in idx] if counted else []
            out = self.generation.generate([r["prompt_ids"] for r in part], 1, self.p.max_completion_length,
                                           greedy=True)
            if not counted:
                continue
            sums[0] += float(self.scores(part, out.completions, out.truncated).sum())
            sums[1] += len(part)
            sums[2] += sum(len(c) for c in out.completions)
            texts = self.tokenizer.batch_decode(out.completions, skip_special_tokens=True)
            for r, text in zip(part, texts):
                if r.get("answer") is not None:
                    answered[0] += 1
                    sums[3] += float(text.strip() == r["answer"].strip())
        all_reduce_sum(sums)
        all_reduce_sum(answered)
        n = max(float(sums[1]), 1.0)
        fields = {"reward": float(sums[0]) / n, "completion_length": float(sums[2]) / n}
        if float(answered[0]) > 0:
            fields["exact_match"] = float(sums[3]) / float(answered[0])
        return fields

    def evaluate(self, trainer) -> Optional[dict]:
        if not self.p.eval_prompts or not self.data.eval:
            return None
        rows = self.data.eval[: self.p.eval_prompts]
        t0 = time.monotonic()
        values = self.held_out(trainer, rows)
        if trainer.dist.is_main:
            log.info("held-out reward-model score (%d prompts, greedy) at step %d: %.4f (%.1f s)", len(rows),
                     trainer.step, values["reward"], time.monotonic() - t0)
        return {f"eval/{k}": v for k, v in values.items()}

    def finish(self, trainer, summary: dict) -> None:
        from launcher.training.process_stats import peak_rss_gb

        first, last = first_and_last_eval(trainer)
        summary["held_out_before"] = first and {k: v for k, v in first.items() if k.startswith("eval/")}
        summary["held_out_after"] = last and {k: v for k, v in last.items() if k.startswith("eval/")}
        summary["peak_rss_mb"] = round(peak_rss_gb() * 1024, 1)

    def log_result(self, trainer) -> None:
        first, last = first_and_last_eval(trainer)
        if first and last and "eval/reward" in first and last is not first:
            log.info("held-out reward-model score %.4f -> %.4f%s", first["eval/reward"], last["eval/reward"],
                     f", exact match {100 * first['eval/exact_match']:.1f}% -> {100 * last['eval/exact_match']:.1f}%"
                     if "eval/exact_match" in first else "")
