"""GRPO objective: rollouts, rewards and group-normalised advantages at the start of each generation batch, then
the clipped policy-ratio loss (launcher.training.grpo_loss, TRL's formulas) on the policy's own completions.

Per generation batch (every ``method.grpo.num_iterations`` optimizer steps) each rank takes its prompts of the
step from the Trainer's data plan, samples G completions per prompt (launcher.inference.rollout; the weights
gathered for the call under ZeRO-3/FSDP), scores them (launcher.training.rewards), and turns each group's rewards
into advantages. A group lives on one rank, so ``scale_rewards=group`` needs no communication (``batch`` sums
over ranks). With num_iterations > 1 the sampling policy's per-token log-probs are kept (``old_logps``) for the
ratio of the later steps; with beta > 0 the reference's (a frozen copy, or the base with LoRA adapters off).

The rollout's random draws come from a generator seeded by (train.seed, generation batch, rank), and the
completion rows of the current generation batch are part of the checkpoint (``state_dict``), so a run resumed
at any step trains on exactly the completions the uninterrupted run did.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Callable, Optional

import torch
from torch import nn

from launcher.engines.distributed import all_reduce_sum
from launcher.training.grpo_loss import aggregate, group_advantages, per_token_loss
from launcher.training.loss import backbone_hidden
from launcher.training.objectives.base import first_and_last_eval, forwards_for, to_device
from launcher.training.objectives.generation_batches import GenerationBatchObjective
from launcher.training.objectives.reference import reference_logps
from launcher.training.rewards import Completion, score_completions, weighted_total

log = logging.getLogger("launcher.grpo")

BASE_KEYS = ("loss", "completions", "completion_tokens", "kl", "entropy", "clipped", "advantage", "advantage_sq",
             "reward", "reward_sq", "truncated", "zero_std")
"""Per-step sums (float64), in this order; then each reward function's sum and sum of squares."""


class CompletionLogProbs(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, completion_ids, prompt_groups)`` -> (log p of each
    completion token [B, C], its entropy [B, C], no gradient). Only the C completion positions go through the LM
    head. The logits are divided by ``temperature``, the rollouts' sampling temperature (as TRL's GRPOTrainer
    does): the log-probs and entropy are those of the distribution the completions were drawn from, so the policy
    gradient and the KL term are the sampling policy's, not the untempered model's.

    With ``prompt_groups`` (each row's prompt among the batch's distinct prompts) and ``share_prompts``, each
    prompt runs once and its key/value cache (with its gradient) is repeated for its completions: a group of G
    costs P + G x C tokens instead of G x (P + C). Off under ZeRO-3/FSDP (their hooks expect one call per layer
    per forward), with gradient checkpointing (no cache while training) and for VL models.

    What the engine wraps for GRPO (DDP / FSDP / DeepSpeed see an ordinary module); also the reference scorer."""

    def __init__(self, model: nn.Module, share_prompts: bool = True, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.share_prompts = share_prompts
        self.temperature = temperature

    def _shared_prompt_hidden(self, input_ids, attention_mask, position_ids, c: int, groups: torch.Tensor):
        """[B, C, H]: the hidden state before each completion token, each distinct prompt run once."""
        from transformers import DynamicCache

        p = input_ids.shape[1] - c
        firsts = torch.cat([groups.new_zeros(1), (groups[1:] != groups[:-1]).nonzero().view(-1) + 1])
        decoder = self.model.get_decoder()
        cache = DynamicCache()
        with warnings.catch_warnings():
            # transformers 5.2x renames past_key_values to cache; 5.0 knows only the old name (setup.cfg)
            warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
            prompt = decoder(input_ids=input_ids[firsts, :p], attention_mask=attention_mask[firsts, :p],
                             position_ids=position_ids[firsts, :p], past_key_values=cache, use_cache=True)
            cache.batch_select_indices(groups)
            completion = decoder(input_ids=input_ids[:, p:], attention_mask=attention_mask,
                                 position_ids=position_ids[:, p:], past_key_values=cache, use_cache=True)
        # the prompt's last state predicts the first completion token, each completion state the next one
        return torch.cat([prompt.last_hidden_state[groups, -1:], completion.last_hidden_state[:, :-1]], dim=1)

    def _can_share(self, groups) -> bool:
        from launcher.models.vision import is_vision_model

        model = getattr(self.model, "get_base_model", lambda: self.model)()
        # transformers 5.2x renames is_gradient_checkpointing; 5.0 knows only the old name (setup.cfg)
        name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
            "is_gradient_checkpointing"
        return (self.share_prompts and groups is not None and not getattr(model, name, False)
                and not is_vision_model(model))

    def forward(self, input_ids, attention_mask, position_ids, completion_ids, prompt_groups=None, **_unused):
        c = completion_ids.shape[1]
        if self._can_share(prompt_groups):
            hidden = self._shared_prompt_hidden(input_ids, attention_mask, position_ids, c, prompt_groups)
        else:
            # the state before each completion token predicts it
            hidden = backbone_hidden(self.model, input_ids, attention_mask, position_ids, {})[:, -c - 1:-1]
        logits = self.model.get_output_embeddings()(hidden).float() / self.temperature
        logps = logits.log_softmax(-1)
        token_logps = logps.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            entropy = -(logps.exp() * logps).sum(-1)
        return token_logps, entropy


def collate_completions(rows: list, pad_id: int) -> dict:
    """Completion rows -> one batch: the prompt left-padded, the completion right-padded after it; prompt_groups
    numbers the runs of consecutive rows with the same prompt (a group's completions)."""
    p = max(len(r["prompt_ids"]) for r in rows)
    c = max(max(len(r["completion_ids"]) for r in rows), 1)
    n = len(rows)
    ids = torch.full((n, p + c), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p + c), dtype=torch.long)
    comp = torch.full((n, c), pad_id, dtype=torch.long)
    cmask = torch.zeros((n, c), dtype=torch.float32)
    old = torch.zeros((n, c), dtype=torch.float32)
    ref = torch.zeros((n, c), dtype=torch.float32)
    for i, r in enumerate(rows):
        pr, co = r["prompt_ids"], r["completion_ids"]
        ids[i, p - len(pr):p] = torch.tensor(pr, dtype=torch.long)
        mask[i, p - len(pr):p] = 1
        if co:
            ids[i, p:p + len(co)] = torch.tensor(co, dtype=torch.long)
            mask[i, p:p + len(co)] = 1
            comp[i, :len(co)] = torch.tensor(co, dtype=torch.long)
            cmask[i, :len(co)] = 1
            if r.get("old_logps") is not None:
                old[i, :len(co)] = torch.tensor(r["old_logps"])
            if r.get("ref_logps") is not None:
                ref[i, :len(co)] = torch.tensor(r["ref_logps"])
    groups = [0]
    for prev, row in zip(rows, rows[1:]):
        groups.append(groups[-1] + (row["prompt_ids"] != prev["prompt_ids"]))
    batch = {
        "input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        "completion_ids": comp, "completion_mask": cmask, "prompt_groups": torch.tensor(groups, dtype=torch.long),
        "advantages": torch.tensor([r["advantage"] for r in rows], dtype=torch.float32),
        "rewards": torch.tensor([r["rewards"] for r in rows], dtype=torch.float64),
        "reward": torch.tensor([r["reward"] for r in rows], dtype=torch.float64),
        "truncated": torch.tensor([float(r["truncated"]) for r in rows], dtype=torch.float64),
        "zero_std": torch.tensor([float(r["group_std"] == 0) for r in rows], dtype=torch.float64),
    }
    if rows[0].get("old_logps") is not None:
        batch["old_logps"] = old
    if rows[0].get("ref_logps") is not None:
        batch["ref_logps"] = ref
    return batch


def sharded_forward(cfg) -> bool:
    """ZeRO-3 and FSDP gather each layer's weights in hooks that expect one call per layer per forward."""
    p = cfg.parallelism
    return p.strategy == "fsdp" or (p.strategy == "deepspeed" and p.zero_stage == 3)


def generation_weights(engine) -> Callable[[], contextlib.AbstractContextManager]:
    """The context that makes ``engine.model`` whole for a rollout and releases it after: ZeRO-3 gathers every
    parameter (as TRL's unwrap_model_for_generation does), FSDP unshards, the others have it whole already."""
    if getattr(engine, "zero_stage", 0) == 3:
        import deepspeed

        return lambda: deepspeed.zero.GatheredParameters(list(engine.model.parameters()))
    return engine.inference_context


def completion_reference(scorer: nn.Module, ref_model: Optional[nn.Module], share_prompts: bool = False,
                         temperature: float = 1.0) -> Callable[[dict], torch.Tensor]:
    """batch -> the reference's per-token log-probs of the completions (online RL's KL term): a frozen copy's
    (``ref_model``, its logits divided by ``temperature`` as the policy's are), or for LoRA the policy's own
    ``scorer`` (its loss module, whose first output they are) with the adapters off for that forward."""
    ref_scorer = (CompletionLogProbs(ref_model, share_prompts=share_prompts, temperature=temperature)
                  if ref_model is not None else None)
    return reference_logps(scorer, ref_scorer, adapters_off=True)


class GRPOObjective(GenerationBatchObjective):
    name = "grpo"

    def __init__(self, data, cfg, tokenizer, reward_functions: list, pad_token_id: int):
        self.data, self.cfg, self.g = data, cfg, cfg.method.grpo
        self.tokenizer = tokenizer
        self.functions = reward_functions
        self.names = [fn.name for fn, _ in reward_functions]
        self.stat_keys = BASE_KEYS + tuple(k for n in self.names for k in (f"rewards/{n}", f"rewards/{n}_sq"))
        self.pad_id = pad_token_id
        self.scorer: Optional[nn.Module] = None
        """The policy's CompletionLogProbs without wrappers (set once the engine is built)."""
        self.reference: Optional[Callable[[dict], torch.Tensor]] = None
        """batch -> the reference's per-token log-probs [B, C] (beta > 0 only)."""
        self.generation = None
        """The GenerationEngine of the rollouts (launcher.inference.rollout)."""
        self.collective = False
        """The engine's forwards are collective (ZeRO-3, FSDP): every rank runs as many."""
        self.dist = None
        self.optimizer_steps_per_batch = self.g.num_iterations
        self.init_generation_batches()
        self._errors = {n: 0 for n in self.names}

    # ------------------------------------------------------------------------------------ the Trainer's hooks

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        return CompletionLogProbs(model, share_prompts=not sharded_forward(cfg),
                                  temperature=cfg.method.grpo.temperature)

    def collate(self, rows: list) -> dict:
        return collate_completions(rows, self.pad_id)

    def state_dict(self) -> dict:
        """The generation batch's completion rows, and the reward errors counted so far."""
        return {**super().state_dict(), "errors": dict(self._errors)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._errors.update(state.get("errors", {}))

    # ------------------------------------------------------------------------------------ rollouts

    def _texts(self, completions: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(completions, skip_special_tokens=True)

    def score_rows(self, prompt_rows: list, completions: list[list[int]], truncated: list[bool]) -> torch.Tensor:
        """[len(completions), functions] rewards; completion k belongs to prompt k // G."""
        group = len(completions) // max(len(prompt_rows), 1)
        texts = self._texts(completions)
        items = [Completion(prompt_rows[k // group], texts[k], len(completions[k]), truncated[k])
                 for k in range(len(completions))]
        table, errors = score_completions(self.functions, items, self.g.reward_errors)
        for name, n in errors.items():
            self._errors[name] += n
        return table

    @torch.no_grad()
    def rollout(self, trainer, index: int, micro_rows: list[list]) -> list[list]:
        g, dist = self.g, trainer.dist
        t0 = time.monotonic()
        prompt_rows = [r for rows in micro_rows for r in rows]
        generator = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + index * 7919 + dist.rank)
        out = self.generation.generate([r["prompt_ids"] for r in prompt_rows], g.num_generations,
                                       g.max_completion_length, temperature=g.temperature, top_p=g.top_p,
                                       generator=generator)
        t1 = time.monotonic()
        table = self.score_rows(prompt_rows, out.completions, out.truncated)
        total = weighted_total(table, self.functions)
        batch_std = None
        if g.scale_rewards == "batch":
            s = torch.tensor([total.sum(), (total ** 2).sum(), float(total.numel())], dtype=torch.float64,
                             device=dist.device)
            all_reduce_sum(s)
            n = float(s[2])
            batch_std = torch.tensor(max(float(s[1]) - float(s[0]) ** 2 / n, 0.0) / max(n - 1, 1.0)).sqrt()
        adv, std = group_advantages(total, g.num_generations, g.scale_rewards, batch_std)
        rows = []
        for k, comp in enumerate(out.completions):
            prompt = prompt_rows[k // g.num_generations]
            rows.append({"prompt_ids": prompt["prompt_ids"], "completion_ids": comp, "input_ids":
                         prompt["prompt_ids"] + comp, "advantage": float(adv[k]), "reward": float(total[k]),
                         "rewards": table[k].tolist(), "truncated": out.truncated[k], "group_std": float(std[k])})
        per_micro = len(micro_rows[0]) * g.num_generations if micro_rows else 0
        batches = [rows[i:i + per_micro] for i in range(0, len(rows), per_micro)] if per_micro else []
        if g.num_iterations > 1 or g.beta > 0:
            self._fill_logps(trainer, batches)
        self._times = {"generation": t1 - t0, "scoring": time.monotonic() - t1}
        return batches

    def _fill_logps(self, trainer, batches: list[list]) -> None:
        """old_logps (num_iterations > 1) and ref_logps (beta > 0) per completion row, one forward each."""
        self.scorer.eval()
        for rows in batches:
            batch = to_device(self.collate(rows), trainer.dist.device)
            lengths = [len(r["completion_ids"]) for r in rows]
            with trainer.precision.autocast():
                old = self.scorer(**batch)[0] if self.g.num_iterations > 1 else None
                ref = self.reference(batch) if self.g.beta > 0 else None
            for i, (r, n) in enumerate(zip(rows, lengths)):
                if old is not None:
                    r["old_logps"] = old[i, :n].float().cpu().tolist()
                if ref is not None:
                    r["ref_logps"] = ref[i, :n].float().cpu().tolist()
        self.scorer.train()

    # ------------------------------------------------------------------------------------ the loss

    def normalizers(self, batches: list[dict]) -> list[float]:
        return [sum(b["completion_ids"].shape[0] for b in batches),
                sum(float(b["completion_mask"].sum()) for b in batches), float(len(batches))]

    def micro_batch_loss(self, module, batch, counts, world_size):
        g = self.g
        logps, entropy = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                position_ids=batch["position_ids"], completion_ids=batch["completion_ids"],
                                prompt_groups=batch["prompt_groups"])
        mask = batch["completion_mask"]
        old = batch["old_logps"] if "old_logps" in batch else logps.detach()
        eps_high = g.epsilon if g.epsilon_high is None else g.epsilon_high
        per_token, kl, clipped = per_token_loss(logps, old, batch["advantages"], g.epsilon, eps_high, g.beta,
                                                batch.get("ref_logps"))
        share = aggregate(per_token, mask, g.loss_type, float(counts[0]), float(counts[1]), float(counts[2]),
                          g.max_completion_length)
        # DDP averages gradients over ranks; the world-size factor makes the step's loss the sum of the shares.
        loss = share * world_size
        return loss, self._stats(share, batch, mask, kl, entropy, clipped)

    def _stats(self, share, batch, mask, kl, entropy, clipped) -> torch.Tensor:
        m = mask.double()
        adv, rew, table = batch["advantages"].double(), batch["reward"].double(), batch["rewards"].double()
        values = [share.detach().double(), torch.tensor(float(mask.shape[0]), dtype=torch.float64), m.sum(),
                  (kl.detach().double() * m).sum(), (entropy.double() * m).sum(), (clipped.double() * m).sum(),
                  adv.sum(), (adv ** 2).sum(), rew.sum(), (rew ** 2).sum(), batch["truncated"].sum(),
                  batch["zero_std"].sum()]
        for j in range(table.shape[1]):
            values += [table[:, j].sum(), (table[:, j] ** 2).sum()]
        return torch.stack([v.to(m.device) for v in values])

    def step_metrics(self, sums, counts) -> dict:
        s = dict(zip(self.stat_keys, sums.tolist()))
        n, tokens = max(s["completions"], 1.0), max(s["completion_tokens"], 1.0)

        def std(total, sq):
            return max(sq / n - (total / n) ** 2, 0.0) ** 0.5

        out = {"loss": s["loss"], "trained_tokens": int(s["completion_tokens"]),
               "reward": s["reward"] / n, "reward_std": std(s["reward"], s["reward_sq"]),
               "kl": s["kl"] / tokens, "entropy": s["entropy"] / tokens, "clip_ratio": s["clipped"] / tokens,
               "advantage_std": std(s["advantage"], s["advantage_sq"]),
               "completion_length": s["completion_tokens"] / n, "truncated_ratio": s["truncated"] / n,
               "frac_reward_zero_std": s["zero_std"] / n}
        for name in self.names:
            out[f"rewards/{name}"] = s[f"rewards/{name}"] / n
            out[f"rewards/{name}_std"] = std(s[f"rewards/{name}"], s[f"rewards/{name}_sq"])
        # rank 0's clock: generation and scoring of this step's rollout, the rest is the update
        out["time/generation"] = self._times["generation"]
        out["time/scoring"] = self._times["scoring"]
        out["time/update"] = time.monotonic() - self._prepared_at
        if self.g.reward_errors == "zero":
            out.update({f"reward_errors/{k}": v for k, v in self._errors.items()})
        return out

    def extra_train_metrics(self, stats: dict) -> dict:
        skip = {"loss", "trained_tokens", "lr", "grad_norm", "tokens", "attended_pairs"}
        return {k: v for k, v in stats.items() if k not in skip}

    # ------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def held_out_rewards(self, trainer, rows: list) -> Optional[dict]:
        """Greedy completions of ``rows`` scored by every reward function (each rank its share). Collective."""
        from launcher.training.batching import eval_batches

        if not rows:
            return None
        dist, size = trainer.dist, self.cfg.train.micro_batch_size * self.g.num_generations
        sums = torch.zeros(2 + 2 * len(self.names), dtype=torch.float64, device=dist.device)
        batches = eval_batches(len(rows), dist.rank, dist.world_size, size)
        for idx, counted in forwards_for(batches, self.collective, dist.device):
            part = [rows[i] for i in idx] if counted else []
            out = self.generation.generate([r["prompt_ids"] for r in part], 1, self.g.max_completion_length,
                                           greedy=True)
            if not counted:
                continue
            table = self.score_rows(part, out.completions, out.truncated)
            total = weighted_total(table, self.functions)
            sums[0] += total.sum().to(sums.device)
            sums[1] += len(part)
            for j in range(table.shape[1]):
                sums[2 + j] += table[:, j].sum().to(sums.device)
            sums[2 + len(self.names)] += sum(len(c) for c in out.completions)
        all_reduce_sum(sums)
        n = max(float(sums[1]), 1.0)
        fields = {"reward": float(sums[0]) / n, "completion_length": float(sums[2 + len(self.names)]) / n}
        for j, name in enumerate(self.names):
            fields[name if name == "exact_match" else f"rewards/{name}"] = float(sums[2 + j]) / n
        return fields

    def evaluate(self, trainer) -> Optional[dict]:
        if not self.g.eval_prompts or not self.data.eval:
            return None
        rows = self.data.eval[: self.g.eval_prompts]
        t0 = time.monotonic()
        values = self.held_out_rewards(trainer, rows)
        if trainer.dist.is_main:
            log.info("held-out reward (%d prompts, greedy) at step %d: %.4f (%.1f s)", len(rows), trainer.step,
                     values["reward"], time.monotonic() - t0)
        return {f"eval/{k}": v for k, v in values.items()}

    def finish(self, trainer, summary: dict) -> None:
        from launcher.training.process_stats import peak_rss_gb

        first, last = first_and_last_eval(trainer)
        summary["held_out_before"] = first and {k: v for k, v in first.items() if k.startswith("eval/")}
        summary["held_out_after"] = last and {k: v for k, v in last.items() if k.startswith("eval/")}
        summary["reward_errors"] = dict(self._errors)
        summary["peak_rss_mb"] = round(peak_rss_gb() * 1024, 1)

    def log_result(self, trainer) -> None:
        first, last = first_and_last_eval(trainer)
        if first and last and "eval/reward" in first and last is not first:
            log.info("held-out reward %.4f -> %.4f%s", first["eval/reward"], last["eval/reward"],
                     f", exact match {100 * first['eval/exact_match']:.1f}% -> {100 * last['eval/exact_match']:.1f}%"
                     if "eval/exact_match" in first else "")
