"""Per-prompt alignment metrics, vectorised over prompts.

Every function takes 2-D arrays of shape ``(n_prompts, n_images)``: one row per prompt, the same
number of images in each row (callers group prompts by image count). Conventions (the paper's):

- ``auroc``: area under the ROC curve of score vs. aligned label, ties counting half
  (scikit-learn's ``roc_auc_score``).
- ``auprc``: average precision, ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds
  (scikit-learn's ``average_precision_score``).
- ``ap@k``: rank by score descending, ties broken by image file name ascending; mean of
  precision@i over the ranks i <= k holding an aligned image, 0 if there are none.
- ``spearman``, ``kendall`` (tau-b): between score and human score; 0 where undefined.
"""

from __future__ import annotations

import numpy as np

METRICS = ("auroc", "auprc", "ap5", "ap10", "ap25", "spearman", "kendall")
AP_AT_K = {"ap5": 5, "ap10": 10, "ap25": 25}


def _group_bounds(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of the run of equal values that holds each position (rows sorted)."""
    n = sorted_values.shape[1]
    pos = np.broadcast_to(np.arange(n), sorted_values.shape)
    starts_run = np.ones(sorted_values.shape, dtype=bool)
    starts_run[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends_run = np.ones(sorted_values.shape, dtype=bool)
    ends_run[:, :-1] = starts_run[:, 1:]
    first = np.maximum.accumulate(np.where(starts_run, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends_run, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    return first, last


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Rank each row from 1, ties getting the mean of their ranks (like ``scipy.stats.rankdata``).

    Example:
        >>> average_ranks(np.array([[3.0, 1.0, 3.0]]))
        array([[2.5, 1. , 2.5]])
    """
    order = np.argsort(x, axis=1, kind="stable")
    first, last = _group_bounds(np.take_along_axis(x, order, axis=1))
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row ROC AUC (Mann-Whitney U with ties counting half); NaN for rows of one class.

    Example:
        >>> auroc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[0, 0, 1, 1]]))
        array([0.75])
    """
    y = labels.astype(bool)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    rank_sum = (average_ranks(scores) * y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auprc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row average precision as scikit-learn computes it; NaN for rows without positives.

    Each positive contributes 1/n_pos of recall at the precision of the last image tied with it.

    Example:
        >>> round(float(auprc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[0, 0, 1, 1]]))[0]), 4)
        0.8333
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    y = np.take_along_axis(labels.astype(bool), order, axis=1)
    true_pos = np.cumsum(y, axis=1)
    _, last = _group_bounds(s)
    precision_at_threshold = np.take_along_axis(true_pos, last, axis=1) / (last + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (precision_at_threshold * y).sum(axis=1) / y.sum(axis=1)


def average_precision_at_k(scores: np.ndarray, labels: np.ndarray, tiebreak: np.ndarray, k: int) -> np.ndarray:
    """Per-row AP@k: mean precision@i over the aligned ranks i <= k; 0 when the top k holds none.

    ``tiebreak`` orders tied scores ascending (e.g. the rank of each image's file name).

    Example:
        >>> s = np.array([[0.9, 0.8, 0.7, 0.6]]); y = np.array([[1, 0, 1, 0]])
        >>> average_precision_at_k(s, y, np.array([[0, 1, 2, 3]]), k=3)
        array([0.83333333])
    """
    order = np.lexsort((tiebreak, -scores), axis=1)
    y = np.take_along_axis(labels.astype(bool), order, axis=1)[:, :k]
    precision = np.cumsum(y, axis=1) / np.arange(1, y.shape[1] + 1)
    hits = y.sum(axis=1)
    total = (precision * y).sum(axis=1)
    return np.divide(total, hits, out=np.zeros(len(hits)), where=hits > 0)


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    num = (a * b).sum(axis=1)
    # Constant rows have no defined correlation: report 0, as the paper's tables do.
    return np.divide(num, denom, out=np.zeros(len(num)), where=denom > 0)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row Spearman rank correlation; 0 where undefined.

    Example:
        >>> spearman(np.array([[1.0, 2.0, 3.0]]), np.array([[0.0, 0.5, 0.4]]))
        array([0.5])
    """
    return np.clip(_row_pearson(average_ranks(x), average_ranks(y)), -1.0, 1.0)


def kendall_tau_b(x: np.ndarray, y: np.ndarray, max_elements: int = 4_000_000) -> np.ndarray:
    """Per-row Kendall tau-b, from the signs of all pairwise differences; 0 where undefined.

    tau-b = sum(sign(dx) sign(dy)) / sqrt(#pairs untied in x * #pairs untied in y). Rows are done
    in chunks of at most ``max_elements`` pair entries to bound memory.

    Example:
        >>> kendall_tau_b(np.array([[1.0, 2.0, 3.0]]), np.array([[0.0, 0.5, 0.4]]))
        array([0.33333333])
    """
    n_rows, n = x.shape
    out = np.zeros(n_rows)
    step = max(1, max_elements // max(1, n * n))
    for lo in range(0, n_rows, step):
        xs, ys = x[lo : lo + step], y[lo : lo + step]
        sx = np.sign(xs[:, :, None] - xs[:, None, :])
        sy = np.sign(ys[:, :, None] - ys[:, None, :])
        concordance = (sx * sy).sum(axis=(1, 2))
        denom = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
        out[lo : lo + step] = np.divide(concordance, denom, out=np.zeros(len(denom)), where=denom > 0)
    return np.clip(out, -1.0, 1.0)


def per_prompt_metrics(
    scores: np.ndarray, aligned: np.ndarray, human_score: np.ndarray, tiebreak: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """All metrics for each row (prompt): ``{metric: array of shape (n_prompts,)}``.

    Args:
        scores: reward scores, shape ``(n_prompts, n_images)``.
        aligned: boolean aligned labels, same shape.
        human_score: fraction of "yes" votes, same shape.
        tiebreak: integer order for tied scores in AP@k (default: column order).

    Example:
        >>> m = per_prompt_metrics(np.array([[0.9, 0.1, 0.5]]), np.array([[1, 0, 0]]),
        ...                        np.array([[1.0, 0.0, 1 / 3]]))
        >>> float(m["auroc"][0]), float(m["ap5"][0]), float(m["kendall"][0])
        (1.0, 1.0, 1.0)
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_prompts, n_images), got shape {scores.shape}")
    aligned = np.asarray(aligned).astype(bool)
    human_score = np.asarray(human_score, dtype=np.float64)
    if tiebreak is None:
        tiebreak = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    out = {"auroc": auroc(scores, aligned), "auprc": auprc(scores, aligned)}
    for name, k in AP_AT_K.items():
        out[name] = average_precision_at_k(scores, aligned, tiebreak, k)
    out["spearman"] = spearman(scores, human_score)
    out["kendall"] = kendall_tau_b(scores, human_score)
    return out
