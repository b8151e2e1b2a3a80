"""What scoring outside the training steps costs, said before it runs and shown while it runs.

DPO, KTO and reward modelling score rows without training them: the held-out rows and a probe of the first
training rows, before training and after it (``RewardObjective.evaluate``), and DPO scores every pair with the
reference once up front when its log-probs are precomputed. The causal-LM methods (SFT, pretraining) compute the
held-out loss before, during (``train.eval_every``) and after training, and ``train.exact_match_samples``
prompts are answered greedily before and after. On a loaded CPU each forward can take seconds, so:

- the probe is small by default (``method.dpo.probe_pairs`` / ``method.kto.probe_rows`` /
  ``method.rm.probe_pairs``: 8) and never larger than the rows the run trains on (``train.max_steps=4`` shrinks
  it); exact match is off by default;
- the held-out rows honour ``train.eval_max_batches``;
- ``launcher train --dry-run`` prints how many forwards each pass takes (``describe_scoring``);
- each pass shows a progress bar on rank 0 and logs what it cost (``ScoringProgress``).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Optional

log = logging.getLogger("launcher.train")

REWARD_METHODS = ("dpo", "kto", "rm")


def method_family(cfg) -> Optional[str]:
    """``dpo``, ``kto`` or ``rm`` for the methods that score pairs or rows with a probe outside the steps, else
    None (the causal-LM methods: held-out loss only)."""
    name = cfg.method.name
    return next((m for m in REWARD_METHODS if name == m or name.startswith(m + "_")), None)


def forwards_per_batch(cfg, precomputed: Optional[bool] = None) -> int:
    """Model calls one scoring micro-batch costs. DPO: the policy on chosen + rejected, plus the reference
    unless its log-probs are precomputed or the loss has none (simpo, orpo). KTO: the reference on the rows
    and their mismatched rows, the policy on each half."""
    family = method_family(cfg)
    if family == "kto":
        return 3
    if family == "rm":
        return 1  # chosen and rejected rows in one batch
    if family == "dpo":
        from launcher.training.preference_loss import needs_reference

        d = cfg.method.dpo
        pre = d.precompute_ref_log_probs if precomputed is None else precomputed
        return 1 + int(needs_reference(d.loss_type) and not pre)
    return 0


def probe_size(requested: int, total_steps: int, global_batch: int) -> int:
    """The probe of training rows: as requested, but never more rows than the run trains on."""
    return max(0, min(requested, total_steps * global_batch))


def held_out_size(eval_rows: int, micro_batch: int, world: int, eval_max_batches: int) -> int:
    """Held-out rows scored per pass (``train.eval_max_batches`` micro-batches per rank at most)."""
    if eval_max_batches:
        return min(eval_rows, eval_max_batches * micro_batch * world)
    return eval_rows


def batches_per_rank(rows: int, micro_batch: int, world: int) -> int:
    return math.ceil(rows / max(micro_batch * world, 1)) if rows else 0


def requested_probe(cfg) -> int:
    family = method_family(cfg)
    return {"dpo": lambda: cfg.method.dpo.probe_pairs, "kto": lambda: cfg.method.kto.probe_rows,
            "rm": lambda: cfg.method.rm.probe_pairs}.get(family, lambda: 0)()


def describe_evaluation(cfg, world: int, eval_rows: int) -> Optional[str]:
    """The dry run's lines for the causal-LM methods: the held-out loss passes and the exact-match check."""
    t = cfg.train
    lines = []
    held = held_out_size(eval_rows, t.micro_batch_size, world, t.eval_max_batches)
    if held:
        batches = batches_per_rank(held, t.micro_batch_size, world)
        during = f", every {t.eval_every} steps" if t.eval_every else ""
        lines.append(f"# held-out loss before training{during} and after: {held} rows (train.eval_max_batches), "
                     f"{batches} micro-batches x 1 forward = {batches} forwards per rank, each time")
    if t.exact_match_samples and eval_rows:
        n = min(t.exact_match_samples, eval_rows)
        lines.append(f"# exact match before and after training: {n} held-out prompts answered greedily on rank 0"
                     f" (train.exact_match_samples), up to {t.max_new_tokens} tokens each: at most"
                     f" {n * t.max_new_tokens} forwards, each time")
    return "\n".join(lines) or None


def describe_scoring(cfg, world: int, train_rows: int, eval_rows: int, total_steps: int, accum: int) -> Optional[str]:
    """The dry run's lines: rows, micro-batches per rank and forwards of each scoring pass (None: no such pass)."""
    family = method_family(cfg)
    if family is None:
        return describe_evaluation(cfg, world, eval_rows)
    t = cfg.train
    unit = "rows" if family == "kto" else "pairs"
    probe = probe_size(requested_probe(cfg), total_steps, t.micro_batch_size * accum * world)
    held = held_out_size(eval_rows, t.micro_batch_size, world, t.eval_max_batches)
    per = forwards_per_batch(cfg)
    batches = batches_per_rank(probe, t.micro_batch_size, world) + batches_per_rank(held, t.micro_batch_size, world)
    lines = [f"# scoring before and after training ({family}): {held} held-out + {probe} training {unit}"
             f" (method.{family}.probe_{unit}, train.eval_max_batches), "
             f"{batches} micro-batches x {per} forwards = {batches * per} forwards per rank, each time"]
    if family == "dpo" and cfg.method.dpo.precompute_ref_log_probs:
        pre = batches_per_rank(train_rows, t.micro_batch_size, world) + batches_per_rank(eval_rows, t.micro_batch_size,
                                                                                           world)
        lines.append(f"# reference log-probs precomputed once before training: {train_rows + eval_rows} {unit},"
                     f" {pre} forwards per rank")
    return "\n".join(lines)


class ScoringProgress:
    """Rank 0's progress bar and cost line for one scoring pass; a no-op elsewhere."""

    def __init__(self, what: str, batches: int, forwards: int, enabled: bool) -> None:
        self.what, self.batches, self.forwards = what, batches, forwards
        self.enabled = enabled and batches > 0
        self.t0 = time.monotonic()
        self.bar = None
        if self.enabled:
            from tqdm import tqdm

            log.info("%s: %d micro-batches x %d forwards", what, batches, forwards)
            self.bar = tqdm(total=batches, desc=what, unit="batch", dynamic_ncols=True, file=sys.stderr,
                            mininterval=2.0)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> float:
        seconds = time.monotonic() - self.t0
        if self.bar is not None:
            self.bar.close()
            log.info("%s: %.1f s (%.2f s per forward)", self.what, seconds,
                     seconds / max(self.batches * self.forwards, 1))
        return seconds


def _count_rows(spec, caps: list) -> int:
    from launcher.data.readers import read_spec_items

    cap = min([c for c in caps if c] or [0]) or None
    n = 0
    for _ in read_spec_items(spec):
        n += 1
        if cap and n >= cap:
            break
    return n


def scoring_plan(cfg) -> Optional[str]:
    """``describe_scoring`` for a composed config, counting the local datasets' rows (the dry run's thin shell;
    the preflight has already read them, so they parse). None when nothing is scored outside the steps."""
    from launcher.config.schema import resolve_grad_accum, world_size
    from launcher.data import resolve_dataset_dir
    from launcher.data.registry import load_registry
    from launcher.training.batching import steps_per_epoch

    d = cfg.data
    registry = load_registry(resolve_dataset_dir(d))

    def rows_of(entries) -> int:
        total = 0
        for entry in entries:
            spec = registry[entry.name]
            total += _count_rows(spec, [entry.max_samples, d.max_samples]) if spec.file_name else 0
        return total

    train_rows, eval_rows = rows_of(d.datasets), rows_of(d.eval_datasets)
    if not d.eval_datasets and d.val_size > 0:
        eval_rows = int(d.val_size) if d.val_size >= 1 else max(1, int(round(train_rows * d.val_size)))
        train_rows -= eval_rows
    world, accum = world_size(cfg), resolve_grad_accum(cfg)
    per_epoch = steps_per_epoch(train_rows, world, cfg.train.micro_batch_size, accum)
    total = cfg.train.max_steps if cfg.train.max_steps > 0 else max(1, math.ceil(cfg.train.epochs * per_epoch))
    return describe_scoring(cfg, world, train_rows, eval_rows, total, accum)
