"""ROUGE-1/2/L and BLEU-4 of generated answers, computed exactly as LLaMA-Factory's ``ComputeSimilarity``.

Per pair: jieba segments both texts into words (Chinese words; English splits on spaces and punctuation,
with the spaces kept as tokens and then dropped by the join/split), rouge-chinese's ``Rouge`` scores the
space-joined words (F1), and nltk's ``sentence_bleu`` scores the *characters* with smoothing method 3.
Each score is x100 and rounded to 4 places per sample; the metric is the mean over samples. An empty
prediction or reference scores 0 for ROUGE (rouge-chinese raises on empty input).

ROUGE-L can come out above ROUGE-1, in LLaMA-Factory's numbers too: rouge-chinese counts ROUGE-1/2 over the
*distinct* n-grams of each side (``exclusive=True``) but ROUGE-L over all words, so an answer that repeats a
word ("a a a a" against "a a a a b c d e": ROUGE-1 33.3, ROUGE-L 66.7) scores higher on ROUGE-L.
"""
from __future__ import annotations

import logging
from typing import Sequence

METRIC_NAMES = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


def _quiet_jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it prints "Building prefix dict..." on first use otherwise
    return jieba


def segment(text: str) -> list[str]:
    """jieba words of ``text``, as LLaMA-Factory feeds them to ROUGE."""
    return list(_quiet_jieba().cut(text))


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 x100 of one pair (not rounded)."""
    from rouge_chinese import Rouge

    hypothesis, ref = segment(prediction), segment(reference)
    if not " ".join(hypothesis).split() or not " ".join(ref).split():
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    scores = Rouge().get_scores(" ".join(hypothesis), " ".join(ref))[0]
    return {k: v["f"] * 100 for k, v in scores.items()}


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 x100 on characters, smoothing method 3 (not rounded)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not prediction or not reference:
        return 0.0  # nltk warns and returns 0 for an empty side; say so without the warning
    return sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3) * 100


def pair_scores(prediction: str, reference: str) -> dict[str, float]:
    """All four metrics of one pair, each x100 and rounded to 4 places (LLaMA-Factory's per-sample values)."""
    scores = rouge_scores(prediction, reference)
    scores["bleu-4"] = bleu4(prediction, reference)
    return {k: round(v, 4) for k, v in scores.items()}


def similarity_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L and BLEU-4 (x100) over pairs; empty input gives zeros."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    import numpy as np

    per_pair = [pair_scores(p, r) for p, r in zip(predictions, references)]
    # LLaMA-Factory's _dump: np.mean of the rounded per-sample scores, itself not rounded again.
    return {k: float(np.mean([s[k] for s in per_pair])) for k in METRIC_NAMES}
