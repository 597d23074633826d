"""The vectorised metrics against scikit-learn / scipy and a naive AP@k, on random data with ties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau, rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from textnorm_t2i.bench.metrics import average_precision_at_k, average_ranks, per_prompt_metrics


def naive_ap_at_k(scores, labels, names, k):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], names[i]))
    hits, precisions = 0, []
    for rank, i in enumerate(order[:k], start=1):
        if labels[i]:
            hits += 1
            precisions.append(hits / rank)
    return float(np.mean(precisions)) if precisions else 0.0


@st.composite
def prompt_batches(draw):
    n_prompts = draw(st.integers(1, 6))
    n_images = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    levels = draw(st.sampled_from([3, 5, 1000]))  # few levels => many ties
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_prompts, n_images)).astype(float) / levels
    votes = rng.choice([-1, 0, 1], p=[0.05, 0.5, 0.45], size=(n_prompts, n_images, 3))
    n_yes = (votes == 1).sum(axis=2)
    aligned = n_yes >= 2
    # Each row must hold both classes to be evaluated.
    aligned[:, 0], aligned[:, 1] = True, False
    human = n_yes / 3.0
    names = np.stack([rng.permutation(n_images) for _ in range(n_prompts)])
    return scores, aligned, human, names


@settings(max_examples=150, deadline=None)
@given(prompt_batches())
def test_metrics_match_references(batch):
    scores, aligned, human, names = batch
    got = per_prompt_metrics(scores, aligned, human, names)
    for p in range(scores.shape[0]):
        s, y, h = scores[p], aligned[p], human[p]
        assert got["auroc"][p] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got["auprc"][p] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        for key, k in (("ap5", 5), ("ap10", 10), ("ap25", 25)):
            assert got[key][p] == pytest.approx(naive_ap_at_k(s, y, names[p], k), abs=1e-12)
        rho = spearmanr(s, h).statistic
        tau = kendalltau(s, h).statistic  # tau-b by default
        assert got["spearman"][p] == pytest.approx(0.0 if np.isnan(rho) else rho, abs=1e-9)
        assert got["kendall"][p] == pytest.approx(0.0 if np.isnan(tau) else tau, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_average_ranks_match_scipy(values):
    x = np.array([values], dtype=float)
    np.testing.assert_allclose(average_ranks(x)[0], rankdata(values, method="average"))


def test_constant_scores_give_zero_correlation_and_half_auroc():
    s = np.zeros((1, 6))
    y = np.array([[1, 0, 1, 0, 0, 1]], dtype=bool)
    m = per_prompt_metrics(s, y, y / 1.0)
    assert m["auroc"][0] == 0.5
    assert m["spearman"][0] == 0.0 and m["kendall"][0] == 0.0
    assert m["auprc"][0] == pytest.approx(0.5)


def test_ap_at_k_tiebreak_uses_names():
    s = np.array([[1.0, 1.0, 0.0]])
    y = np.array([[0, 1, 0]], dtype=bool)
    # Image 1 has the smaller name: it ranks first among the tied pair.
    assert average_precision_at_k(s, y, np.array([[1, 0, 2]]), 5)[0] == 1.0
    assert average_precision_at_k(s, y, np.array([[0, 1, 2]]), 5)[0] == 0.5


def test_ap_at_k_zero_without_hits_in_top_k():
    s = np.arange(10, dtype=float)[None, ::-1].copy()
    y = np.zeros((1, 10), dtype=bool)
    y[0, 9] = True
    assert average_precision_at_k(s, y, np.arange(10)[None], 5)[0] == 0.0
