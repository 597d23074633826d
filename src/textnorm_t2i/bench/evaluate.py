"""Evaluating scores against a subset's human labels, and summarising over prompts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from textnorm_t2i.bench.metrics import METRICS, per_prompt_metrics
from textnorm_t2i.bench.tia2 import Subset
from textnorm_t2i.errors import InputError

N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0


@dataclass
class PromptResults:
    """Per-prompt metrics of one model on one subset.

    Attributes:
        prompts: evaluated prompts, in subset order.
        values: ``{metric: array (n_prompts,)}``.
        dropped_images: images of evaluated prompts that had no score (``allow_missing`` only).
        dropped_prompts: prompts left with a single class after dropping images.
    """

    prompts: list[str]
    values: dict[str, np.ndarray]
    dropped_images: list[str] = field(default_factory=list)
    dropped_prompts: list[str] = field(default_factory=list)

    def summary(self, n_bootstrap: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
        """Mean over prompts with a percentile bootstrap 95% CI (see :func:`summarize`)."""
        return summarize(self.values, n_bootstrap=n_bootstrap, seed=seed)


def summarize(values: Mapping[str, np.ndarray], n_bootstrap: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
    """Unweighted mean over prompts and a 95% percentile-bootstrap CI over prompts.

    The resampling indices depend only on the number of prompts and the seed, so every model of a
    subset is resampled the same way (paired comparisons stay meaningful).

    Example:
        >>> out = summarize({"auroc": np.array([0.5, 0.7, 0.9])}, n_bootstrap=200)
        >>> out["n_prompts"], round(out["auroc"], 3)
        (3, 0.7)
        >>> low, high = out["ci"]["auroc"]; bool(0.5 <= low <= 0.7 <= high <= 0.9)
        True
    """
    n = len(next(iter(values.values()))) if values else 0
    out: dict = {"n_prompts": n}
    if n == 0:
        out.update({m: None for m in values})
        out["ci"] = {m: [None, None] for m in values}
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    ci = {}
    for metric, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        out[metric] = float(np.mean(v))
        low, high = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
        ci[metric] = [float(low), float(high)]
    out["ci"] = ci
    return out


def evaluate_subset(subset: Subset, scores: Mapping[str, float] | np.ndarray,
                    allow_missing: bool = False) -> PromptResults:
    """Per-prompt metrics of per-image ``scores`` on ``subset``.

    ``scores`` is ``{image file: score}`` or an array aligned with ``subset.images`` (NaN = missing).

    Every image of an evaluated prompt needs a score unless ``allow_missing``; then missing images
    are dropped (and listed), and a prompt left with one class is skipped. Scores for images of
    prompts that are not evaluated are ignored.

    Example:
        >>> from textnorm_t2i.bench.tia2 import load_subset
        >>> s = load_subset("counting")
        >>> perfect = {img: float(a) for img, a in zip(s.images, s.aligned)}
        >>> res = evaluate_subset(s, perfect)
        >>> len(res.prompts), float(res.values["auroc"].mean())
        (146, 1.0)
    """
    if isinstance(scores, np.ndarray):
        score_arr = np.asarray(scores, dtype=np.float64)
        if score_arr.shape != (len(subset.images),):
            raise InputError(f"subset {subset.name!r}: expected {len(subset.images)} scores, got {score_arr.shape}")
    else:
        score_arr = np.full(len(subset.images), np.nan)
        for name, i in subset.image_index.items():
            if name in scores:
                score_arr[i] = scores[name]
    present = ~np.isnan(score_arr)
    missing: list[str] = []
    kept_prompts: list[str] = []
    kept_idx: list[np.ndarray] = []
    dropped_prompts: list[str] = []
    for prompt in subset.evaluated_prompts:
        idx = subset.prompt_images[prompt]
        have = present[idx]
        if not have.all():
            absent = [subset.images[i] for i in idx[~have]]
            if not allow_missing:
                raise InputError(
                    f"subset {subset.name!r}: {len(absent)} image(s) of prompt {prompt!r} have no score "
                    f"(first: {absent[0]}); pass --allow-missing to drop them"
                )
            missing.extend(absent)
            idx = idx[have]
            a = subset.aligned[idx]
            if not (a.any() and not a.all()):
                dropped_prompts.append(prompt)
                continue
        kept_prompts.append(prompt)
        kept_idx.append(idx)

    values = {m: np.zeros(len(kept_prompts)) for m in METRICS}
    # Prompts are grouped by image count so that each group is one rectangular array.
    by_size: dict[int, list[int]] = {}
    for row, idx in enumerate(kept_idx):
        by_size.setdefault(len(idx), []).append(row)
    for rows in by_size.values():
        idx = np.stack([kept_idx[r] for r in rows])
        metrics = per_prompt_metrics(score_arr[idx], subset.aligned[idx], subset.human_score[idx],
                                     subset.name_rank[idx])
        for m in METRICS:
            values[m][rows] = metrics[m]
    return PromptResults(kept_prompts, values, missing, dropped_prompts)


def published_table(subset: Subset) -> dict[str, dict]:
    """Summaries of the published per-prompt metrics of a subset, per model.

    Example:
        >>> from textnorm_t2i.bench.tia2 import load_subset
        >>> table = published_table(load_subset("counting"))
        >>> sorted(table)
        ['blip2', 'clip', 'imagereward', 'pickscore', 'textnorm_ur']
        >>> table["clip"]["n_prompts"]
        146
    """
    if not subset.published:
        raise InputError(f"subset {subset.name!r} has no published alignment scores")
    models: list[str] = []
    for entry in subset.published.values():
        models.extend(k for k, v in entry.items() if isinstance(v, dict) and k not in models)
    table = {}
    for model in models:
        rows = [e[model] for e in subset.published.values() if model in e]
        values = {m: np.array([float(r[m]) for r in rows]) for m in METRICS}
        table[model] = summarize(values)
    return table
