"""The arithmetic the benchmarks report, against simulation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_samples_for_cosine_predicts_the_cosine_of_independent_gradient_means():
    """Two means of n noisy 'gradients' (signal mu, isotropic noise) have cosine |mu|^2 / (|mu|^2 + tr/n); the
    estimate from the cosine at 64 samples predicts the batch size where it reaches 0.5."""
    from rl_gradient_snr import samples_for_cosine

    rng = np.random.default_rng(0)
    d = 400
    mu = np.full(d, 0.05)                       # |mu|^2 = 1; tr(Sigma) = d: signal-to-noise 1/400 per sample

    def mean_cosine(n, reps=300):
        a = mu + rng.standard_normal((reps, d)) / np.sqrt(n)
        b = mu + rng.standard_normal((reps, d)) / np.sqrt(n)
        return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

    predicted = samples_for_cosine(mean_cosine(64), 64)
    assert 300 < predicted < 560                # exact: 400
    assert abs(mean_cosine(round(predicted)) - 0.5) < 0.06
    assert samples_for_cosine(-0.01, 64) == float("inf")
