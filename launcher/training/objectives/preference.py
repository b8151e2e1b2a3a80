"""Preference objective: DPO and its variants, from the policy's and the reference's sequence log-probs.

loss_type sigmoid (DPO, with label smoothing), ipo, hinge, and the reference-free simpo and orpo
(launcher.training.preference_loss). The reference is whatever ``reference`` is: a scorer of a frozen copy,
the policy with its LoRA adapters disabled, or nothing when the rows carry precomputed ``ref_logps``. Sequence
log-probs come from the decoder's hidden states at answer positions only, in chunks: the [2B, T, V] logits
never exist. The loss is summed over pairs and divided by the pairs of the whole optimizer step (all
micro-batches, all ranks); ORPO's NLL term by the chosen answer tokens of the step.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
from torch import nn

from launcher.errors import DataError
from launcher.training.loss import IGNORE_INDEX, backbone_hidden, chunked_token_logprobs
from launcher.training.objectives.base import RewardObjective, first_and_last_eval
from launcher.training.preference_loss import PairTerms, needs_reference, orpo_nll_sum, pair_terms

log = logging.getLogger("launcher.dpo")

STAT_KEYS = ("pair_loss", "nll", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
             "logps/chosen", "logps/rejected", "pairs", "chosen_tokens")
"""Sums kept per step / per evaluation, in this order; divided by pairs (or chosen tokens for nll) at the end."""


class SequenceLogProbs(nn.Module):
    """``forward(**batch)`` -> (summed log p of the trained tokens per row [N], trained tokens per row [N]).

    What the engine wraps for preference methods (DDP / FSDP / DeepSpeed see an ordinary module); also the
    reference scorer.
    """

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, input_ids, shift_labels, position_ids=None, attention_mask=None, **vision):
        # VL models: the multimodal backbone with the batch's pixels
        hidden = backbone_hidden(self.model, input_ids, attention_mask, position_ids, vision)
        trained = shift_labels != IGNORE_INDEX
        token_logps = chunked_token_logprobs(hidden[trained], self.model.get_output_embeddings(),
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


def check_shared_prompts(data) -> None:
    """``check_shared_prompt`` on every training and held-out pair of ``data``."""
    for split, rows in (("train", data.train), ("eval", data.eval or [])):
        for i, row in enumerate(rows):
            check_shared_prompt(row, f"{split} pair {i}")


def log_pair_rewards(trainer, logger: logging.Logger, accuracy: str) -> None:
    """The ``accuracy`` (pairs whose chosen row is rewarded more) and the margin before -> after training, on the
    training-pair probe and the held-out pairs: what a pair objective (DPO's family, the reward model) achieved."""
    first, last = first_and_last_eval(trainer)
    for prefix in ("train_pairs", "eval"):
        key = f"{prefix}/rewards/accuracy"
        if first and last and key in first:
            logger.info("%s: %s %.3f -> %.3f, margin %.4f -> %.4f", prefix, accuracy, first[key], last[key],
                        first[f"{prefix}/rewards/margin"], last[f"{prefix}/rewards/margin"])


class PreferenceObjective(RewardObjective):
    name = "preference"
    probe_prefix = "train_pairs"
    stat_keys = STAT_KEYS

    def __init__(self, data, cfg):
        super().__init__(data, cfg)  # and ``scorer``: the policy's SequenceLogProbs without wrappers
        self.dpo = cfg.method.dpo
        self.uses_reference = needs_reference(self.dpo.loss_type)
        self.reference: Optional[Callable[[dict], torch.Tensor]] = None
        """batch -> reference log-probs [2B], when the loss needs a reference and the rows carry none."""

    def loss_module(self, model: nn.Module, cfg) -> nn.Module:
        return SequenceLogProbs(model, cfg.train.loss_chunk_size)

    def collate(self, rows: list) -> dict:
        batch = self.data.collate(rows)
        if rows and "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"][0] for r in rows] + [r["ref_logps"][1] for r in rows],
                                              dtype=torch.float32)
        return batch

    # ------------------------------------------------------------------------------------ scoring

    def _terms(self, logps: torch.Tensor, tokens: torch.Tensor, ref: Optional[torch.Tensor]) -> PairTerms:
        b, d = logps.shape[0] // 2, self.dpo
        return pair_terms(d.loss_type, d.beta, logps[:b], logps[b:], tokens[:b], tokens[b:],
                          None if ref is None else ref[:b], None if ref is None else ref[b:],
                          d.label_smoothing, d.simpo_gamma)

    def _score(self, batch: dict, scorer) -> tuple[PairTerms, torch.Tensor, torch.Tensor]:
        ref = batch.pop("ref_logps", None)
        if self.uses_reference and ref is None:
            ref = self.reference(batch)
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

    # ------------------------------------------------------------------------------------ training

    def normalizers(self, batches: list[dict]) -> list[float]:
        trained = [b["shift_labels"] != IGNORE_INDEX for b in batches]
        return [sum(b["input_ids"].shape[0] // 2 for b in batches),
                sum(int(t[: t.shape[0] // 2].sum()) for t in trained),
                sum(int(t.sum()) for t in trained)]

    def micro_batch_loss(self, module, batch, counts, world_size):
        global_pairs, global_chosen_tokens = float(counts[0]), float(counts[1])
        terms, logps, tokens = self._score(batch, module)
        # DDP averages gradients over ranks; the world-size factor makes this a mean over every pair (and, for
        # ORPO's NLL, every chosen token) of the step, whichever micro-batch or rank holds it.
        loss = terms.losses.sum() * world_size / max(global_pairs, 1.0)
        if self.dpo.loss_type == "orpo":
            loss = loss + orpo_nll_sum(logps[: logps.shape[0] // 2]) * world_size / max(global_chosen_tokens, 1.0)
        return loss, self._stats(terms, logps, tokens)

    def step_metrics(self, sums, counts) -> dict:
        return {**self._metrics_from(sums), "trained_tokens": int(counts[2])}

    def extra_train_metrics(self, stats: dict) -> dict:
        return {k: v for k, v in stats.items() if "/" in k or k == "nll"}

    def probe_count(self) -> int:
        return self.dpo.probe_pairs

    def _eval_stats(self, batch: dict) -> torch.Tensor:
        return self._stats(*self._score(batch, self.scorer))

    # ------------------------------------------------------------------------------------ evaluation

    def log_result(self, trainer) -> None:
        log_pair_rewards(trainer, log, "reward accuracy")
