"""predict's ROUGE-1/2/L and BLEU-4 equal LLaMA-Factory 0.9.5's ComputeSimilarity (its predict's
compute_metrics) on the same predictions and labels: per pair and the mean, LF's numbers computed by LF's own
code (tests/after/fixtures/make_lf_metrics.py) with the same libraries (jieba, rouge-chinese, nltk)."""
import json
from pathlib import Path

import pytest

from launcher.inference.text_metrics import pair_scores, similarity_metrics

FIXTURE = Path(__file__).with_name("fixtures") / "lf_similarity.json"
pytestmark = pytest.mark.skipif(not FIXTURE.is_file(), reason="no LLaMA-Factory fixture")


def test_per_pair_and_mean_equal_llamafactorys():
    fixture = json.loads(FIXTURE.read_text())
    for case in fixture["pairs"]:
        assert pair_scores(case["prediction"], case["label"]) == pytest.approx(case["lf"], abs=1e-9), case
    preds = [c["prediction"] for c in fixture["pairs"]]
    labels = [c["label"] for c in fixture["pairs"]]
    assert similarity_metrics(preds, labels) == pytest.approx(fixture["lf_mean"], abs=1e-9)


def test_rouge_l_above_rouge_1_is_llamafactorys_too():
    """A repeating answer: rouge-chinese counts ROUGE-1 over distinct words and ROUGE-L over all words."""
    case = next(c for c in json.loads(FIXTURE.read_text())["pairs"] if c["prediction"] == "a a a a")
    assert case["lf"]["rouge-l"] > case["lf"]["rouge-1"]
    assert pair_scores("a a a a", "a a a a b c d e")["rouge-l"] == case["lf"]["rouge-l"]
