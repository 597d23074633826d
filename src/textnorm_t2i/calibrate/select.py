"""Choosing TextNorm's temperature (and an ensemble's lambda) honestly.

Default: k-fold cross-validation over *prompts*. For every candidate in the grid we compute the
per-prompt metrics once; each fold then picks the candidate with the best mean objective on its
training prompts only and reports the metrics of its held-out prompts with that choice. The global
choice (for later use) is the best candidate on all prompts.

``per_prompt_oracle`` reproduces how the authors' released numbers were made: the best candidate per
prompt, chosen with that prompt's own labels. It is optimistic and is labelled as oracle everywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from textnorm_t2i.bench.evaluate import evaluate_subset, summarize
from textnorm_t2i.bench.metrics import METRICS
from textnorm_t2i.bench.tia2 import Subset
from textnorm_t2i.calibrate.ensemble import combine
from textnorm_t2i.calibrate.textnorm import normalize_sets, pad_sets
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import open_image

DEFAULT_TEMPERATURES = tuple(float(t) for t in np.round(10.0 ** np.linspace(-2, 2, 17), 6))
DEFAULT_LAMS = (0.0, 0.25, 0.5, 1.0, 2.0)
# Benchmark set rewards are rounded to this many decimals (in float64) before anything ranks them. Another
# CPU's kernels move the last bits of a float32 score; a ranking over near-ties (an AUROC, TextNorm's softmax
# near saturation, the cross-validated choice of a temperature) would follow those bits. Rounded, the scores
# are the same numbers on every machine unless one lies within ~1e-7 of a rounding midpoint, and then it
# moves by 1e-4, far below any difference between rewards that a table shows.
SCORE_DECIMALS = 4
# TextNorm scores (and ensembles of them) are rounded to this many significant bits (about 12 decimal digits)
# before they are ranked: images with the same rounded set rewards must tie on every machine, but the softmax's exp
# kernels differ in the last bit between CPUs (and between a vector's lanes and its tail). Significant bits, not
# decimals: scores near 0 (1e-40 against 1e-300 at small temperatures) keep their order, as float64 gives it.
NORMALIZED_BITS = 40


def round_significant(x: np.ndarray, bits: int = NORMALIZED_BITS) -> np.ndarray:
    """``x`` with its mantissa rounded to ``bits`` bits (exact power-of-two scaling: no overflow, the same result
    on every machine; zeros, infinities and NaN unchanged).

    Example:
        >>> round_significant(np.array([0.5 + 1e-15, 1.0, 0.0])).tolist()
        [0.5, 1.0, 0.0]
        >>> bool(0 < round_significant(np.array([1e-310]))[0] < round_significant(np.array([1e-300]))[0])
        True
    """
    mantissa, exponent = np.frexp(np.asarray(x, dtype=np.float64))
    return np.ldexp(np.round(mantissa * 2.0**bits) / 2.0**bits, exponent)


def subset_set_rewards(subset: Subset, rewards: Sequence, batch: int = 128, progress: bool = False) -> list[list]:
    """Each TextNorm reward's set rewards (caption first) for every image of the subset's evaluated prompts
    (None for the others), in batches of ``batch`` images.

    The one way set rewards of a benchmark are computed: ``calibrate``, the misalignment table and the
    demo all call it, so the same batches give the same floating-point numbers and the same tables. Each
    reward is rounded to :data:`SCORE_DECIMALS` decimals in float64, so tables do not depend on the CPU.
    """
    from tqdm.auto import tqdm

    out: list[list] = [[None] * len(subset.images) for _ in rewards]
    wanted = sorted(i for p in subset.evaluated_prompts for i in subset.prompt_images[p])
    for lo in tqdm(range(0, len(wanted), batch), desc="set rewards", unit="batch", disable=not progress):
        idx = wanted[lo: lo + batch]
        images = [open_image(subset.image_path(subset.images[i])) for i in idx]
        prompts = [subset.captions[i] for i in idx]
        for m, reward in enumerate(rewards):
            for i, r in zip(idx, reward.set_rewards(images, prompts)):
                out[m][i] = torch.round(r.detach().double(), decimals=SCORE_DECIMALS)
    return out


def kfold_assignment(n_prompts: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold index of each prompt: a seeded permutation cut into ``k`` near-equal folds.

    Example:
        >>> sorted(np.bincount(kfold_assignment(10, 3)).tolist())
        [3, 3, 4]
    """
    if not 2 <= k <= n_prompts:
        raise InputError(f"k-fold cross-validation needs 2 <= k <= number of prompts ({n_prompts}), got k={k}")
    folds = np.empty(n_prompts, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n_prompts)] = np.arange(n_prompts) % k
    return folds


def cross_validate(objective: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per fold, the grid index with the best mean objective over the *training* prompts.

    ``objective`` has shape ``(n_grid, n_prompts)``; ties go to the first grid index.

    Example:
        >>> obj = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.2, 0.9]])
        >>> cross_validate(obj, np.array([0, 0, 1, 1])).tolist()
        [1, 0]
    """
    k = int(folds.max()) + 1
    return np.array([int(np.argmax(objective[:, folds != f].mean(axis=1))) for f in range(k)])


@dataclass
class Selection:
    """Outcome of a hyper-parameter search.

    Attributes:
        mode: ``"cv"`` or ``"per_prompt_oracle"``.
        metric: the objective (a per-prompt metric, higher is better).
        chosen: the global choice (cv: best on all prompts); None for the oracle.
        heldout: summary of the metrics under the selection (cv: held-out folds; oracle: per-prompt best).
        folds: per fold, the parameters chosen from its training prompts (cv only).
    """

    mode: str
    metric: str
    grid: list[dict]
    chosen: dict | None
    heldout: dict
    folds: list[dict] = field(default_factory=list)
    k: int | None = None

    @property
    def label(self) -> str:
        if self.mode == "per_prompt_oracle":
            return "ORACLE: chosen per prompt with that prompt's own labels (optimistic; not a fair result)"
        return f"held-out metrics, {self.k}-fold cross-validation over prompts"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "label": self.label, "metric": self.metric, "k": self.k,
                "chosen": self.chosen, "folds": self.folds, "heldout": self.heldout}


def select_hyperparameters(
    subset: Subset,
    member_set_rewards: Sequence[Sequence[torch.Tensor | None]],
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    lams: Sequence[float] = DEFAULT_LAMS,
    ensemble_mode: str = "ur",
    scaling: str = "none",
    metric: str = "auroc",
    k: int = 5,
    seed: int = 0,
    mode: str = "cv",
) -> Selection:
    """Choose temperature (and lambda, for an ensemble of several members) on a labelled subset.

    Args:
        subset: the labelled benchmark subset.
        member_set_rewards: per member, per image of ``subset`` (in ``subset.images`` order), the
            base rewards of the image against ``[its prompt] + contrastive set`` (None = not scored).
        temperatures, lams: the grids (lambda only matters for ``ensemble_mode="ur"`` with several members).
        metric: objective, one of :data:`~textnorm_t2i.bench.metrics.METRICS`.
        mode: ``"cv"`` (honest) or ``"per_prompt_oracle"`` (the authors' released variant).

    Example:
        >>> from textnorm_t2i.bench.tia2 import load_subset
        >>> s = load_subset("counting")
        >>> # A toy member: the original prompt scores 1 for aligned images, a near miss scores 0.5.
        >>> sets = [torch.tensor([float(a), 0.5]) for a in s.aligned]
        >>> sel = select_hyperparameters(s, [sets], temperatures=[0.1, 1.0], k=3)
        >>> sel.heldout["auroc"]
        1.0
    """
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    if mode not in ("cv", "per_prompt_oracle"):
        raise InputError(f"mode must be 'cv' or 'per_prompt_oracle', got {mode!r}")
    if not member_set_rewards:
        raise InputError("no reward members given")
    for m, sets in enumerate(member_set_rewards):
        if len(sets) != len(subset.images):
            raise InputError(f"member {m}: expected set rewards for {len(subset.images)} images, got {len(sets)}")
    scored = np.array([all(sets[i] is not None for sets in member_set_rewards) for i in range(len(subset.images))])
    padded = []
    for sets in member_set_rewards:
        values, mask = pad_sets([s if s is not None else torch.zeros(1) for s in sets])
        padded.append((values, mask))
    lam_grid = list(lams) if (len(member_set_rewards) > 1 and ensemble_mode == "ur") else [0.0]
    grid = [{"temperature": float(t), "lam": float(lam)} for t, lam in itertools.product(temperatures, lam_grid)]
    if len(member_set_rewards) == 1:
        grid = [{"temperature": g["temperature"]} for g in grid]

    per_grid = []
    for g in grid:
        member_scores = torch.stack([normalize_sets(v, m, g["temperature"], scaling) for v, m in padded])
        combined = round_significant(combine(member_scores, ensemble_mode, g.get("lam", 0.0)).double().numpy())
        combined[~scored] = np.nan
        per_grid.append(evaluate_subset(subset, combined, allow_missing=True))
    prompts = per_grid[0].prompts
    values = {m: np.stack([r.values[m] for r in per_grid]) for m in METRICS}  # (n_grid, n_prompts)
    objective = values[metric]
    cols = np.arange(len(prompts))

    if mode == "per_prompt_oracle":
        best = np.argmax(objective, axis=0)
        heldout = summarize({m: v[best, cols] for m, v in values.items()})
        return Selection(mode, metric, grid, None, heldout)

    folds = kfold_assignment(len(prompts), k, seed)
    chosen_per_fold = cross_validate(objective, folds)
    pick = chosen_per_fold[folds]
    heldout = summarize({m: v[pick, cols] for m, v in values.items()})
    final = int(np.argmax(objective.mean(axis=1)))
    return Selection(mode, metric, grid, grid[final], heldout, [grid[i] for i in chosen_per_fold], k)
