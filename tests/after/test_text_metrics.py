"""ROUGE/BLEU as LLaMA-Factory computes them, against values derived by hand here (not by the libraries)."""
from __future__ import annotations

import math

import pytest

from launcher.inference.text_metrics import pair_scores, segment, similarity_metrics


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


def test_exact_prediction_scores_100_in_english_and_chinese():
    for text in ("the cat sat on the mat", "我爱北京天安门"):
        assert pair_scores(text, text) == {"rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0, "bleu-4": 100.0}


def test_english_partial_overlap():
    # Words: [the, cat, sat] vs [the, cat, ran] (jieba splits on spaces; the spaces vanish in join/split).
    assert [w for w in segment("the cat sat") if w.strip()] == ["the", "cat", "sat"]
    s = pair_scores("the cat sat", "the cat ran")
    assert s["rouge-1"] == pytest.approx(100 * 2 / 3, abs=1e-4)  # 2 of 3 words each way
    assert s["rouge-2"] == pytest.approx(50.0, abs=1e-4)  # bigram 'the cat' of {the cat, cat sat}
    assert s["rouge-l"] == pytest.approx(100 * 2 / 3, abs=1e-4)  # LCS 'the cat'
    # BLEU-4 on characters: "the cat sat" vs "the cat ran", 11 characters each (brevity penalty 1).
    # 1-grams 9/11 (t clipped to 2, s unmatched), 2-grams 7/10, 3-grams 6/9, 4-grams 5/8.
    expected = (9 / 11 * 7 / 10 * 6 / 9 * 5 / 8) ** 0.25 * 100
    assert s["bleu-4"] == pytest.approx(expected, abs=1e-4)


def test_chinese_partial_overlap():
    assert segment("我爱北京") == ["我", "爱", "北京"]
    assert segment("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    s = pair_scores("我爱北京", "我爱北京天安门")
    assert s["rouge-1"] == pytest.approx(100 * f1(3 / 3, 3 / 4), abs=1e-4)  # 85.7143
    assert s["rouge-2"] == pytest.approx(100 * f1(2 / 2, 2 / 3), abs=1e-4)  # 80.0
    assert s["rouge-l"] == pytest.approx(100 * f1(3 / 3, 3 / 4), abs=1e-4)
    # Characters: every n-gram of the 4-character prediction is in the reference (precision 1);
    # brevity penalty exp(1 - 7/4).
    assert s["bleu-4"] == pytest.approx(100 * math.exp(1 - 7 / 4), abs=1e-4)  # 47.2367


def test_bleu_smoothing_method3_when_no_4gram_matches():
    # "abcd" vs "abce": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 -> method3 makes it 1 / (2 * 1).
    s = pair_scores("abcd", "abce")
    assert s["bleu-4"] == pytest.approx(100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25, abs=1e-4)


def test_empty_prediction_scores_zero_and_means_average():
    assert pair_scores("", "the answer") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    m = similarity_metrics(["the cat sat", "the dog barked loudly", ""], ["the cat sat", "the dog barked loudly", "z"])
    assert m == {"rouge-1": pytest.approx(200 / 3, abs=1e-4), "rouge-2": pytest.approx(200 / 3, abs=1e-4),
                 "rouge-l": pytest.approx(200 / 3, abs=1e-4), "bleu-4": pytest.approx(200 / 3, abs=1e-4)}
    with pytest.raises(ValueError):
        similarity_metrics(["a"], [])
