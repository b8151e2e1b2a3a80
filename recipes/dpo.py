"""Preference optimization (DPO and friends), full or LoRA, on every rank.

Features: loss_type sigmoid (DPO, with label smoothing), ipo, hinge, and the reference-free simpo and orpo
(launcher.training.preference_loss); the reference model is the base with LoRA adapters disabled (no second copy), a
frozen copy for full fine-tuning, or reference log-probs computed once before training
(``method.dpo.precompute_ref_log_probs``: no reference in memory while training). Sequence log-probs come
from the decoder's hidden states at answer positions only, in chunks (launcher.training.loss.chunked_token_logprobs):
the [2B, T, V] logits never exist. The loss is summed over pairs and divided by the pairs of the whole
optimizer step (all micro-batches, all ranks); ORPO's NLL term by the chosen answer tokens of the step.
Metrics per step in metrics.jsonl / W&B: rewards/chosen, rewards/rejected, rewards/accuracy, rewards/margin,
logps/chosen, logps/rejected (aggregated over micro-batches and ranks); before and after training (and every
train.eval_every steps) the same on the held-out pairs (``eval/...``) and on the first
``method.dpo.probe_pairs`` training pairs (``train_pairs/...``). Everything else is SFTRecipe's: the
schedule, checkpoints with exact resume, the final save (HF model, or adapter + random-init base).

Raises DataError before training when the data is not preference data (ranking: true), or when a pair's
chosen and rejected rows do not share the prompt and its masks.
"""
from __future__ import annotations

import copy
import json
import logging
from typing import Optional

import torch
from torch import nn

from launcher.errors import DataError
from launcher.training.batching import eval_batches
from launcher.engines.distributed import all_reduce_sum
from launcher.engines.base import build_engine
from launcher.training.loss import IGNORE_INDEX, chunked_token_logprobs
from launcher.training.preference_loss import PairTerms, needs_reference, orpo_nll_sum, pair_terms
from launcher.training.process_stats import peak_rss_gb
from recipes.sft import SFTRecipe, _to_device

log = logging.getLogger("launcher.dpo")

# Sums kept per step / per evaluation, in this order; divided by pairs (or chosen tokens for nll) at the end.
STAT_KEYS = ("pair_loss", "nll", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
             "logps/chosen", "logps/rejected", "pairs", "chosen_tokens")


class SequenceLogProbs(nn.Module):
    """``forward(**batch)`` -> (summed log p of the trained tokens per row [N], trained tokens per row [N]).

    What the engine wraps for DPO (DDP / FSDP / DeepSpeed see an ordinary module); also the reference scorer.
    """

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, input_ids, shift_labels, position_ids=None, attention_mask=None, **_unused):
        out = self.model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        trained = shift_labels != IGNORE_INDEX
        token_logps = chunked_token_logprobs(out.last_hidden_state[trained], self.model.get_output_embeddings(),
                                             shift_labels[trained], self.chunk_size)
        rows = trained.nonzero(as_tuple=True)[0]
        sums = token_logps.new_zeros(input_ids.shape[0]).index_add(0, rows, token_logps)
        return sums, trained.sum(dim=1)


def check_shared_prompt(row: dict, where: str) -> None:
    """Chosen and rejected must start with the same prompt ids, untrained, and both have an answer."""
    p = row["prompt_len"]
    if row["chosen_input_ids"][:p] != row["rejected_input_ids"][:p]:
        raise DataError(f"{where}: chosen and rejected rows do not share the prompt ids; rebuild the data cache")
    for side in ("chosen", "rejected"):
        labels = row[f"{side}_labels"]
        if any(x != IGNORE_INDEX for x in labels[:p]):
            raise DataError(f"{where}: prompt tokens of the {side} row are trained; preference prompts must be masked")
        if all(x == IGNORE_INDEX for x in labels[p:]):
            raise DataError(f"{where}: the {side} answer has no trained token (cut by data.cutoff_len?)")


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "no_sync") else module


class DPORecipe(SFTRecipe):
    def setup(self) -> None:
        self.dpo = self.cfg.method.dpo
        self.uses_reference = needs_reference(self.dpo.loss_type)
        self.ref_model: Optional[nn.Module] = None
        self.evals: list[dict] = []
        super().setup()
        if self.dist.is_main:
            d = self.dpo
            if not self.uses_reference:
                reference = "none (reference-free)"
            elif d.precompute_ref_log_probs:
                reference = "log-probs precomputed once"
            elif self.cfg.method.finetuning == "lora":
                reference = "base with adapters disabled"
            else:
                reference = "frozen copy"
            log.info("dpo: loss %s, beta %g, label smoothing %g, reference: %s", d.loss_type, d.beta,
                     d.label_smoothing, reference)

    # ------------------------------------------------------------------------------------ hooks

    def build_data(self):
        from launcher.data import build_preference_datasets

        bundle = build_preference_datasets(self.cfg, self.tokenizer, attn_implementation=self.attn_impl)
        for split, rows in (("train", bundle.train), ("eval", bundle.eval or [])):
            for i, row in enumerate(rows):
                check_shared_prompt(row, f"{split} pair {i}")
        return bundle

    def build_engine(self, model):
        full_copy = (self.uses_reference and self.cfg.method.finetuning == "full"
                     and not self.dpo.precompute_ref_log_probs)
        if full_copy:
            # A frozen copy of the starting weights; taken before the engine wraps (or shards) the policy.
            self.ref_model = copy.deepcopy(model).to(self.dist.device).eval().requires_grad_(False)
        chunk = self.cfg.train.loss_chunk_size
        engine = build_engine(self.cfg, model, self.dist, self.total_steps,
                              loss_module=lambda m, cfg: SequenceLogProbs(m, chunk))
        self.scorer = _unwrap(engine.module)
        if self.ref_model is not None:
            self.ref_scorer = SequenceLogProbs(self.ref_model, chunk)
        if self.uses_reference and self.dpo.precompute_ref_log_probs:
            # Before _resume loads trained weights: the policy is still the reference here.
            self._precompute_reference(engine)
        return engine

    def collate(self, rows: list[dict]) -> dict:
        batch = self.data.collate(rows)
        if rows and "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"][0] for r in rows] + [r["ref_logps"][1] for r in rows],
                                              dtype=torch.float32)
        return batch

    # ------------------------------------------------------------------------------------ reference

    @torch.no_grad()
    def reference_logps(self, batch: dict) -> torch.Tensor:
        if self.ref_model is not None:
            return self.ref_scorer(**batch)[0]
        if self.cfg.method.finetuning == "lora":
            # The base model is the reference; the adapters are switched off for this forward only.
            with self.scorer.model.disable_adapter():
                return self.scorer(**batch)[0]
        # Full fine-tuning without a copy: only while precomputing, before the policy has moved.
        return self.scorer(**batch)[0]

    @torch.no_grad()
    def _precompute_reference(self, engine) -> None:
        self.scorer.eval()
        for rows in (self.data.train, self.data.eval or []):
            values = torch.zeros(len(rows), 2, dtype=torch.float64, device=self.dist.device)
            for idx in eval_batches(len(rows), self.dist.rank, self.dist.world_size, self.cfg.train.micro_batch_size):
                batch = _to_device(self.data.collate([rows[i] for i in idx]), self.dist.device)
                ref = self.reference_logps(batch).double()
                values[idx, 0], values[idx, 1] = ref[: len(idx)], ref[len(idx):]
            all_reduce_sum(values)  # each rank filled its share
            for row, (c, r) in zip(rows, values.tolist()):
                row["ref_logps"] = (c, r)
        self.scorer.train()
        if self.dist.is_main:
            log.info("reference log-probs precomputed for %d training pairs", len(self.data.train))

    # ------------------------------------------------------------------------------------ loss

    def _terms(self, logps: torch.Tensor, tokens: torch.Tensor, ref: Optional[torch.Tensor]) -> PairTerms:
        b, d = logps.shape[0] // 2, self.dpo
        return pair_terms(d.loss_type, d.beta, logps[:b], logps[b:], tokens[:b], tokens[b:],
                          None if ref is None else ref[:b], None if ref is None else ref[b:],
                          d.label_smoothing, d.simpo_gamma)

    def _score(self, batch: dict, scorer) -> tuple[PairTerms, torch.Tensor, torch.Tensor]:
        ref = batch.pop("ref_logps", None)
        if self.uses_reference and ref is None:
            ref = self.reference_logps(batch)
        logps, tokens = scorer(**batch)
        return self._terms(logps, tokens, ref), logps, tokens

    @staticmethod
    def _stats(terms: PairTerms, logps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b = logps.shape[0] // 2
        c, r = terms.chosen_rewards.double(), terms.rejected_rewards.double()
        lp = logps.detach().double()
        return torch.stack([
            terms.losses.detach().double().sum(), -lp[:b].sum(), c.sum(), r.sum(), (c > r).double().sum(),
            (c - r).sum(), lp[:b].sum(), lp[b:].sum(), torch.tensor(float(b), dtype=torch.float64, device=c.device),
            tokens[:b].sum().double(),
        ])

    def _metrics_from(self, sums: torch.Tensor) -> dict:
        s = dict(zip(STAT_KEYS, sums.tolist()))
        pairs = max(s["pairs"], 1.0)
        out = {"loss": s["pair_loss"] / pairs}
        if self.dpo.loss_type == "orpo":
            out["nll"] = s["nll"] / max(s["chosen_tokens"], 1.0)
            out["loss"] += out["nll"]
        for key in STAT_KEYS[2:8]:
            out[key] = s[key] / pairs
        return out

    # ------------------------------------------------------------------------------------ train

    def train_step(self, step: int) -> dict:
        batches = self._micro_batches_for_step(step)
        trained = [b["shift_labels"] != IGNORE_INDEX for b, _, _ in batches]
        counts = torch.tensor(
            [sum(b["input_ids"].shape[0] // 2 for b, _, _ in batches),
             sum(int(t[: t.shape[0] // 2].sum()) for t in trained),
             sum(n for _, n, _ in batches), sum(int(t.sum()) for t in trained)],
            dtype=torch.float64, device=self.dist.device,
        )
        all_reduce_sum(counts)
        global_pairs, global_chosen_tokens = float(counts[0]), float(counts[1])
        world = self.dist.world_size
        sums = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=self.dist.device)
        for i, (batch, _, _) in enumerate(batches):
            batch = _to_device(batch, self.dist.device)
            with self.engine.accumulation_context(i == len(batches) - 1), self._autocast():
                terms, logps, tokens = self._score(batch, self.engine.module)
                # DDP averages gradients over ranks; the world-size factor makes this a mean over every pair
                # (and, for ORPO's NLL, every chosen token) of the step, whichever micro-batch or rank holds it.
                loss = terms.losses.sum() * world / max(global_pairs, 1.0)
                if self.dpo.loss_type == "orpo":
                    loss = loss + orpo_nll_sum(logps[: logps.shape[0] // 2]) * world / max(global_chosen_tokens, 1.0)
                self.engine.backward(loss)
            sums += self._stats(terms, logps, tokens)
        all_reduce_sum(sums)
        lr = self.engine.lr
        grad_norm = self.engine.step()
        return {**self._metrics_from(sums), "lr": lr, "grad_norm": grad_norm,
                "trained_tokens": int(counts[3]), "tokens": int(counts[2])}

    def extra_train_metrics(self, stats: dict) -> dict:
        return {k: v for k, v in stats.items() if "/" in k or k == "nll"}

    @torch.no_grad()
    def score_pairs(self, rows: list) -> Optional[dict]:
        """Loss and reward metrics of the current policy on ``rows`` (every rank takes its share)."""
        if not rows:
            return None
        self.engine.eval()
        sums = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=self.dist.device)
        for idx in eval_batches(len(rows), self.dist.rank, self.dist.world_size, self.cfg.train.micro_batch_size):
            batch = _to_device(self.collate([rows[i] for i in idx]), self.dist.device)
            with self._autocast():
                terms, logps, tokens = self._score(batch, self.scorer)
            sums += self._stats(terms, logps, tokens)
        all_reduce_sum(sums)
        self.engine.train()
        return self._metrics_from(sums)

    def evaluate(self) -> Optional[float]:
        held_out = self.score_pairs(self.data.eval)
        return held_out and held_out["loss"]

    def _log_eval(self) -> Optional[float]:
        record: dict = {"kind": "eval", "step": self.step}
        held_out = self.score_pairs(self.data.eval)
        probe = self.score_pairs(self.data.train[: self.dpo.probe_pairs]) if self.dpo.probe_pairs else None
        for prefix, values in (("eval", held_out), ("train_pairs", probe)):
            for key, value in (values or {}).items():
                record[f"{prefix}/{key}"] = value
        if held_out:
            record["eval_loss"] = held_out["loss"]
        else:  # "eval" records carry an eval_loss (the loss plot reads it); this one scored training pairs only
            record["kind"] = "probe"
        self.evals.append(record)
        if self.metrics and len(record) > 2:
            self.metrics.log(record)
        return held_out and held_out["loss"]

    def train(self) -> dict:
        summary = super().train()
        first = next((e for e in self.evals if e["step"] == 0), None)
        last = self.evals[-1] if self.evals else None
        summary["rewards_before"] = first and {k: v for k, v in first.items() if "rewards/" in k}
        summary["rewards_after"] = last and {k: v for k, v in last.items() if "rewards/" in k}
        summary["peak_rss_mb"] = round(peak_rss_gb() * 1024, 1)
        if self.dist.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            for prefix in ("train_pairs", "eval"):
                key = f"{prefix}/rewards/accuracy"
                if first and last and key in first:
                    log.info("%s: reward accuracy %.3f -> %.3f, margin %.4f -> %.4f", prefix, first[key], last[key],
                             first[f"{prefix}/rewards/margin"], last[f"{prefix}/rewards/margin"])
        return summary
