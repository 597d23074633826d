"""Reward diagnosis: where a reward's alignment signal lives, and whether TextNorm can use it.

For image x, its prompt y and the benchmark's contrastive set C(y), split the reward into

    offset    m(x)    = mean of r(x, y') over y' in {y} + C(y)     (what the image scores whatever it shows)
    contrast  r(x, y) - m(x)                                       (the only part TextNorm keeps)
    margin    r(x, y) - max over y' in C(y) of r(x, y')           (does y beat every near miss?)

and measure, per subset, how well each ranks a prompt's images the way the annotators do (AUROC per
prompt, mean over prompts, 95% bootstrap CI). Then, independent of any benchmark labels:

- **contrastive accuracy** per perturbation type (count +-1, colour swap, shape swap, relation swap,
  object dropped, object added): the share of (image, near miss) pairs with r(x, y) > r(x, y_miss)
  (ties count half), on clean rendered scenes and on generated images the oracle judges aligned;
- **calibration** of TextNorm's probability against the majority-vote aligned label: a reliability
  diagram (10 equal-width bins, Wilson 95% intervals) and the expected calibration error.

Example:
    >>> import numpy as np, torch
    >>> decompose([torch.tensor([3.0, 1.0, 2.0])])["margin"].tolist()
    [1.0]
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from textnorm_t2i import tables
from textnorm_t2i.bench.evaluate import evaluate_subset
from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.calibrate.textnorm import normalize_sets, pad_sets
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import atomic_write, open_image
from textnorm_t2i.objectives.factory import build_reward
from textnorm_t2i.rewards.base import Reward
from textnorm_t2i.world.grammar import Clause, near_misses, parse, sample_prompts
from textnorm_t2i.world.oracle import judge
from textnorm_t2i.world.scene import render
from textnorm_t2i.world.vocab import COLORS, MAX_OBJECTS, SHAPES

PERTURBATIONS = ("count", "color", "shape", "relation", "dropped", "added")
N_BINS = 10


def decompose(set_rewards: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """``raw``, ``offset``, ``contrast`` and ``margin`` per image from its set rewards (prompt first).

    Example:
        >>> out = decompose([torch.tensor([2.0, 0.0, 1.0])])
        >>> {k: v.tolist() for k, v in out.items()}
        {'raw': [2.0], 'offset': [1.0], 'contrast': [1.0], 'margin': [1.0]}
    """
    raw = np.array([float(s[0]) for s in set_rewards])
    offset = np.array([float(s.double().mean()) for s in set_rewards])
    margin = np.array([float(s[0] - s[1:].max()) if len(s) > 1 else 0.0 for s in set_rewards])
    return {"raw": raw, "offset": offset, "contrast": raw - offset, "margin": margin}


def perturbations(spec: Any) -> dict[str, list[Any]]:
    """Near misses of a world spec by type: the grammar's count/colour/shape/relation swaps, plus one
    object clause dropped (never the last) or one new object added (up to four objects).

    Example:
        >>> from textnorm_t2i.world.grammar import parse
        >>> [s.to_prompt() for s in perturbations(parse("a red circle and a blue square"))["dropped"]]
        ['a blue square', 'a red circle']
    """
    out = near_misses(spec)
    out["dropped"] = []
    if len(spec.clauses) > 1:
        for i in range(len(spec.clauses)):
            out["dropped"].append(replace(spec, clauses=spec.clauses[:i] + spec.clauses[i + 1:], relation=None))
    out["added"] = []
    if spec.relation is None and spec.n_objects < MAX_OBJECTS and len(spec.clauses) < 2:
        taken = {(c.shape, c.color) for c in spec.clauses}
        for shape in SHAPES:
            color = next(c for c in COLORS if (shape, c) not in taken)
            if shape != spec.clauses[0].shape:
                out["added"].append(replace(spec, clauses=(*spec.clauses, Clause(shape, color, 1))))
    return out


def contrastive_accuracy(reward: Any, images: Sequence[Any], specs: Sequence[Any]) -> dict[str, dict]:
    """Per perturbation type: ``{"accuracy", "pairs"}`` of r(x, y) > r(x, y_miss) over images and misses."""
    sets, kinds = [], []
    for spec in specs:
        misses = perturbations(spec)
        prompts = [spec.to_prompt()]
        kind = []
        for k in PERTURBATIONS:
            for m in misses[k]:
                prompts.append(m.to_prompt())
                kind.append(k)
        sets.append(prompts)
        kinds.append(kind)
    scores = reward.score_sets(images, sets) if images else []
    wins: dict[str, list[float]] = {k: [] for k in PERTURBATIONS}
    for s, kind in zip(scores, kinds):
        for value, k in zip(s[1:].tolist(), kind):
            wins[k].append(1.0 if s[0] > value else 0.5 if s[0] == value else 0.0)
    return {k: {"accuracy": float(np.mean(v)) if v else float("nan"), "pairs": len(v)} for k, v in wins.items()}


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Reliability bins and the expected calibration error of probabilities against 0/1 labels.

    Example:
        >>> out = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 0, 1, 1]))
        >>> round(out["ece"], 3)
        0.05
    """
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        if n == 0:
            bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": 0})
            continue
        conf, acc = float(probs[mask].mean()), float(labels[mask].mean())
        ece += n / len(probs) * abs(acc - conf)
        low, high = _wilson(acc, n)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n, "mean_probability": conf,
                     "aligned_fraction": acc, "ci": [low, high]})
    return {"ece": float(ece), "bins": bins}


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def clean_scenes(subset: str, n: int, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """``n`` rendered scenes of a subset's prompts and their specs (each scene exactly its prompt)."""
    specs = [replace(parse(p), lead_in="") for p in sample_prompts(subset, n, seed=seed)]
    return [render(s, seed=seed * 100_003 + i) for i, s in enumerate(specs)], specs


def diagnose(reward: Any, benchmark: str | os.PathLike = "shapes", subsets: Sequence[str] | None = None,
             temperature: float = 1.0, clean_per_subset: int = 100, seed: int = 0,
             perturbation_tests: bool = True) -> dict:
    """The diagnosis of ``reward`` (a reward, or anything :func:`~textnorm_t2i.objectives.factory.build_reward`
    takes) on a benchmark with images; see the module docstring for what each number means.

    Returns ``{"reward", "benchmark", "temperature", "seconds", "subsets": {subset: {...}}}``.
    """
    t0 = time.time()
    model = reward if isinstance(reward, Reward) else build_reward(reward)
    out: dict = {"reward": model.name, "benchmark": str(benchmark), "temperature": temperature, "subsets": {}}
    for name, subset in load_benchmark(benchmark, subsets).items():
        if subset.image_dir is None:
            raise InputError(f"{benchmark}: subset {name} has no images; diagnose needs a benchmark with images")
        if not subset.prompt_sets:
            raise InputError(f"{benchmark}: subset {name} has no contrastive prompt sets")
        images = [open_image(subset.image_path(img)) for img in subset.images]
        candidates = [list(dict.fromkeys([c, *subset.prompt_sets.get(c, [])])) for c in subset.captions]
        sets = model.score_sets(images, candidates)
        parts = decompose(sets)
        row: dict = {"n_prompts": len(subset.evaluated_prompts), "auroc": {}}
        for part, values in parts.items():
            summary = evaluate_subset(subset, values).summary()
            row["auroc"][part] = {"mean": summary["auroc"], "ci": summary["ci"]["auroc"]}
        values, mask = pad_sets(sets)
        probs = normalize_sets(values, mask, temperature).numpy()
        evaluated = sorted(i for p in subset.evaluated_prompts for i in subset.prompt_images[p])
        row["calibration"] = reliability(probs[evaluated], subset.aligned[evaluated].astype(float))
        if perturbation_tests:
            specs_clean = clean_scenes(name, clean_per_subset, seed)
            generated, gen_specs = [], []
            for img, caption in zip(images, subset.captions):
                try:
                    spec = replace(parse(caption), lead_in="")
                except InputError:
                    continue
                if judge(img, spec).aligned:
                    generated.append(img)
                    gen_specs.append(spec)
            row["contrastive_accuracy"] = {"clean": contrastive_accuracy(model, *specs_clean),
                                           "generated": contrastive_accuracy(model, generated, gen_specs)}
        out["subsets"][name] = row
    out["seconds"] = round(time.time() - t0, 2)
    return out


# ------------------------------------------------------------------------------------ output
def render_table(results: Mapping[str, dict], fmt: str = "table") -> str:
    """The diagnosis of one or several rewards (``{reward: diagnose(...)}``) as a table."""
    header = ["subset", "reward", "raw", "offset", "contrast", "margin", "ECE"]
    kinds = [k for k in PERTURBATIONS]
    rows = []
    acc_rows = []
    for reward, res in results.items():
        for subset, row in res["subsets"].items():
            cells = [subset, reward]
            for part in ("raw", "offset", "contrast", "margin"):
                a = row["auroc"][part]
                cells.append(f"{a['mean']:.3f} ±{(a['ci'][1] - a['ci'][0]) / 2:.3f}")
            cells.append(f"{row['calibration']['ece']:.3f}")
            rows.append(cells)
            for where in ("clean", "generated"):
                acc = row.get("contrastive_accuracy", {}).get(where)
                if acc is None:
                    continue
                acc_rows.append([subset, reward, where] + [
                    "-" if math.isnan(acc[k]["accuracy"]) else f"{acc[k]['accuracy']:.2f} ({acc[k]['pairs']})"
                    for k in kinds])
    text = _table(header, rows, fmt, "AUROC against the annotators (mean over prompts ±95% CI half-width); "
                  "ECE of TextNorm's probability")
    if acc_rows:
        text += "\n" + _table(["subset", "reward", "images", *kinds], acc_rows, fmt,
                              "Contrastive accuracy r(x, y) > r(x, near miss) by perturbation (pairs)")
    return text


def _table(header: list[str], rows: list[list[str]], fmt: str, title: str) -> str:
    if fmt == "csv":
        return tables.csv_text(header, rows)
    if fmt == "markdown":
        return f"**{title}**\n\n" + tables.markdown(header, rows, text_columns=2) + "\n"
    return tables.terminal(header, rows, text_columns=2, title=title) + "\n"


def plot_reliability(results: Mapping[str, dict], path: str | os.PathLike) -> None:
    """A reliability diagram per subset (one line per reward, Wilson 95% intervals), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(dict.fromkeys(s for r in results.values() for s in r["subsets"]))
    fig, axes = plt.subplots(1, len(subsets), figsize=(4 * len(subsets), 4), squeeze=False)
    for ax, subset in zip(axes[0], subsets):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
        for reward, res in results.items():
            row = res["subsets"].get(subset)
            if row is None:
                continue
            bins = [b for b in row["calibration"]["bins"] if b["count"]]
            x = [b["mean_probability"] for b in bins]
            y = [b["aligned_fraction"] for b in bins]
            err = [[b["aligned_fraction"] - b["ci"][0] for b in bins],
                   [b["ci"][1] - b["aligned_fraction"] for b in bins]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{reward} (ECE {row['calibration']['ece']:.2f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("TextNorm probability (bin mean)")
        ax.set_ylabel("aligned fraction (annotators)")
        ax.set_title(subset)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Reliability of TextNorm's probability (95% Wilson intervals)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)

