"""The study's numbers: best-of-n curves, the TextNorm map, held-out summaries, side-by-side judgments and
checkpoint selection. Every interval is a 95% percentile bootstrap over prompts (paired: the same
resampled prompts for every model compared).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from textnorm_t2i.analysis.diagnose import diagnose
from textnorm_t2i.bench.evaluate import summarize
from textnorm_t2i.io import read_json
from textnorm_t2i.rewards.perceive import PRESETS, PerceiveReward
from textnorm_t2i.study.config import DRAFT_CONTROLS, SFT_CONTROLS, StudyConfig
from textnorm_t2i.study.evaluate import score_uint8
from textnorm_t2i.study.objectives import ObjectiveScorer, choose_temperatures
from textnorm_t2i.study.objectives import family as family_of
from textnorm_t2i.world.annotators import simulate_votes


def mean_ci(values: np.ndarray, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """``{"mean", "ci": [low, high]}`` of per-prompt values (NaNs dropped).

    Example:
        >>> mean_ci(np.array([0.0, 1.0, 1.0, 1.0]), 200)["mean"]
        0.75
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"mean": None, "ci": [None, None], "n": 0}
    s = summarize({"x": v}, n_bootstrap, seed)
    return {"mean": s["x"], "ci": s["ci"]["x"], "n": int(len(v))}


def kl_bon(n: int) -> float:
    """The KL between best-of-n and the base distribution, ``log n - (n - 1) / n``.

    Example:
        >>> kl_bon(1), round(kl_bon(64), 3)
        (0.0, 3.175)
    """
    return math.log(n) - (n - 1) / n


def best_of_n_values(objective: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """Per prompt, the mean over disjoint groups of ``n`` samples of ``value`` at each group's best by ``objective``.

    Example:
        >>> best_of_n_values(np.array([[0.1, 0.9, 0.5, 0.2]]), np.array([[1.0, 0.0, 1.0, 1.0]]), 2).tolist()
        [0.5]
    """
    n_prompts, n_max = objective.shape
    groups = objective.reshape(n_prompts, n_max // n, n)
    best = groups.argmax(axis=2)
    picked = np.take_along_axis(value.reshape(n_prompts, n_max // n, n), best[..., None], axis=2)[..., 0]
    return picked.mean(axis=1)


def bon_picks(objective: np.ndarray, n: int) -> np.ndarray:
    """Flat pool index (within each prompt's row) of each group's best sample, shape ``(n_prompts, n_max / n)``."""
    n_prompts, n_max = objective.shape
    best = objective.reshape(n_prompts, n_max // n, n).argmax(axis=2)
    return best + np.arange(n_max // n)[None, :] * n


def bon_curves(scores: dict[str, np.ndarray], objectives: Sequence[str], ns: Sequence[int], subsets: np.ndarray,
               n_bootstrap: int = 1000) -> dict:
    """Gold alignment and fidelity of the best of n by each objective, overall and per subset, with CIs; plus
    the ORACLE curve (best of n by gold itself: what a perfect reward would reach)."""
    gold, fid = scores["gold"], scores["fidelity"]
    out: dict[str, Any] = {"ns": list(ns), "kl_bon": [kl_bon(n) for n in ns], "objectives": {}}
    rng = np.random.default_rng(0)
    tie_break = rng.random(gold.shape) * 1e-9  # the oracle's ties (0/1) broken at random, not by position
    for name in [*objectives, "ORACLE gold"]:
        obj = gold + tie_break if name == "ORACLE gold" else scores[name]
        row: dict[str, Any] = {"gold": [], "fidelity": [], "by_subset": {s: [] for s in dict.fromkeys(subsets)}}
        for n in ns:
            g = best_of_n_values(obj, gold, n)
            row["gold"].append(mean_ci(g, n_bootstrap))
            row["fidelity"].append(mean_ci(best_of_n_values(obj, fid, n), n_bootstrap))
            for s in row["by_subset"]:
                row["by_subset"][s].append(mean_ci(g[subsets == s], n_bootstrap))
        out["objectives"][name] = row
    return out


def perceive_map(cfg: StudyConfig, images: Any, prompts: list[str], gold: np.ndarray, progress: bool = True) -> dict:
    """For each (look weight, noise scale): gold of best-of-n by TextNorm minus by the raw reward (paired CI over
    prompts), the CV temperature, and the cell's diagnosis (offset / contrast AUROC on TIA2-Shapes)."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    m = cfg.map
    noisy = PRESETS["shapes-perceive-noisy"]["noise"]
    shape = gold.shape
    cells = []
    for w in m.look_weights:
        for s in m.noise_scales:
            noise = replace(noisy, count=noisy.count * s, color=noisy.color * s, shape=noisy.shape * s,
                            relation=noisy.relation * s, miss_small=noisy.miss_small * s)
            cells.append((w, s, PerceiveReward(noise, w, name=f"perceive(w={w:g},noise={s:g}x)")))
    out: dict[str, Any] = {"n": m.n, "look_weights": list(m.look_weights), "noise_scales": list(m.noise_scales),
                           "cells": []}
    for w, s, reward in tqdm(cells, desc="map", disable=not progress):
        temps = choose_temperatures([reward.name], [], cfg.objectives.benchmark, cfg.objectives.k,
                                    cfg.objectives.temperatures, None, cfg.bootstrap, False, {reward.name: reward})
        t = temps["rewards"][reward.name]["temperature"]
        scorer = ObjectiveScorer({})
        scorer.add(reward.name, reward, t)
        sc = score_uint8(scorer, images, prompts)
        raw, tn = sc[f"raw/{reward.name}"].reshape(shape), sc[f"tn/{reward.name}"].reshape(shape)
        g_raw, g_tn = best_of_n_values(raw, gold, m.n), best_of_n_values(tn, gold, m.n)
        diag = diagnose(reward, cfg.objectives.benchmark, perturbation_tests=False)
        parts = {part: float(np.mean([row["auroc"][part]["mean"] for row in diag["subsets"].values()]))
                 for part in ("raw", "offset", "contrast")}
        out["cells"].append({"w": w, "noise": s, "temperature": t, "gold_raw": mean_ci(g_raw, cfg.bootstrap),
                             "gold_textnorm": mean_ci(g_tn, cfg.bootstrap),
                             "difference": mean_ci(g_tn - g_raw, cfg.bootstrap),
                             "auroc": parts, "textnorm_auroc_cv": temps["rewards"][reward.name]["textnorm"]["auroc"]})
    return out


def per_prompt(records: list[dict], value: Any, prompts: Sequence[str] | None = None) -> np.ndarray:
    """Per prompt (in ``prompts`` order, default first-seen), the mean of ``value(record)`` over its samples."""
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(r["prompt"], []).append(float(value(r)))
    order = list(prompts) if prompts is not None else list(groups)
    return np.array([np.mean(groups[p]) if p in groups else np.nan for p in order])


def run_trajectory(evals: list[dict], load: Any, n_bootstrap: int = 1000) -> dict:
    """What a fine-tuning run did to gold along the way (``evals``: its evaluation rows, step 0 first; ``load(tag)``:
    an evaluation's per-image records): the peak gold and its step, the final gold, the drop from the peak as a
    paired difference over prompts (same prompts, same noise) with its CI, and Spearman's rank correlation of the
    optimised reward with gold across the evaluations (1: gold rose with the proxy all along), and the change of
    gold from the first evaluation (the base) to the last, paired over prompts, with its CI.

    Example:
        >>> recs = {t: [{"prompt": "p", "aligned": a}, {"prompt": "q", "aligned": 1.0}] for t, a in
        ...         (("a", 0.0), ("b", 1.0), ("c", 0.0))}
        >>> rows = ((0, "a", 0.5), (1, "b", 1.0), (2, "c", 0.5))
        >>> evals = [{"step": s, "tag": t, "gold": g, "objective": s} for s, t, g in rows]
        >>> out = run_trajectory(evals, recs.__getitem__, 200)
        >>> out["peak_step"], out["drop"]["mean"], out["change"]["mean"]
        (1, 0.5, 0.0)
    """
    peak = max(evals, key=lambda e: e["gold"])
    last = evals[-1]
    peak_recs, last_recs = load(peak["tag"]), load(last["tag"])
    prompts = sorted({r["prompt"] for r in peak_recs})
    gold = lambda r: r["aligned"]  # noqa: E731
    drop = per_prompt(peak_recs, gold, prompts) - per_prompt(last_recs, gold, prompts)
    change = per_prompt(last_recs, gold, prompts) - per_prompt(load(evals[0]["tag"]), gold, prompts)
    proxy, golds = [e["objective"] for e in evals], [e["gold"] for e in evals]
    rho = float(stats.spearmanr(proxy, golds).statistic) if len(evals) > 2 and len(set(golds)) > 1 else float("nan")
    return {"peak_step": int(peak["step"]), "peak_gold": float(peak["gold"]), "final_gold": float(last["gold"]),
            "drop": mean_ci(drop, n_bootstrap), "change": mean_ci(change, n_bootstrap), "proxy_gold_spearman": rho}


def summarize_records(records: list[dict], n_bootstrap: int = 1000) -> dict:
    """Gold alignment, fidelity, KL (and the last step's apart), pixel drift and every score of an evaluation: means
    with CIs over prompts; gold per subset."""
    out: dict[str, Any] = {"images": len(records), "prompts": len({r["prompt"] for r in records})}
    out["gold"] = mean_ci(per_prompt(records, lambda r: r["aligned"]), n_bootstrap)
    out["fidelity"] = mean_ci(per_prompt(records, lambda r: r["fidelity"]), n_bootstrap)
    out["kl"] = mean_ci(per_prompt(records, lambda r: r["kl"]), n_bootstrap)
    for key in ("kl_last_step", "drift"):  # the first edition's records lack them
        if key in records[0]:
            out[key] = mean_ci(per_prompt(records, lambda r, key=key: r[key]), n_bootstrap)
    out["scores"] = {k: mean_ci(per_prompt(records, lambda r, k=k: r["scores"][k]), n_bootstrap)
                     for k in records[0]["scores"]}
    subsets = sorted({r["subset"] for r in records})
    out["gold_by_subset"] = {s: mean_ci(per_prompt([r for r in records if r["subset"] == s],
                                                   lambda r: r["aligned"]), n_bootstrap) for s in subsets}
    return out


def split_prompts(prompts: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded ``(validation, test)`` split of prompts.

    Example:
        >>> val, test = split_prompts(["a", "b", "c", "d"], 0.5)
        >>> sorted(val + test), len(val)
        (['a', 'b', 'c', 'd'], 2)
    """
    order = np.random.default_rng(seed).permutation(len(prompts))
    k = max(1, min(len(prompts) - 1, int(round(fraction * len(prompts)))))
    return [prompts[i] for i in sorted(order[:k])], [prompts[i] for i in sorted(order[k:])]


def side_by_side(aligned_a: np.ndarray, aligned_b: np.ndarray, prompt_index: np.ndarray, annotators: int,
                 flip: float, unsure: float, seed: int, n_bootstrap: int = 1000) -> dict:
    """Win / tie / loss of A against B on paired images (same prompt and seed), judged by simulated annotators.

    Each image gets ``annotators`` noisy votes of the oracle's verdict (the world's annotator noise); the
    majority of the decided votes is the image's judged verdict (no majority: undecided). A wins when
    its image is judged aligned and B's is not, loses in the reverse case, and ties otherwise. CIs are
    bootstraps over prompts (pairs of one prompt resampled together).
    """
    def judged(aligned: np.ndarray, s: int) -> np.ndarray:
        votes = simulate_votes(aligned.astype(bool), annotators, flip, unsure, seed=s)
        yes, no = (votes == 1).sum(1), (votes == 0).sum(1)
        return np.where(yes > no, 1, np.where(no > yes, 0, -1))

    a, b = judged(aligned_a, seed), judged(aligned_b, seed + 1)
    win = ((a == 1) & (b != 1)).astype(float)
    loss = ((b == 1) & (a != 1)).astype(float)
    tie = 1.0 - win - loss
    prompts = np.unique(prompt_index)
    per = {k: np.array([v[prompt_index == p].mean() for p in prompts]) for k, v in
           (("win", win), ("tie", tie), ("loss", loss))}
    out = {k: mean_ci(v, n_bootstrap) for k, v in per.items()}
    out["pairs"] = int(len(win))
    out["win_to_loss"] = float(win.sum() / max(loss.sum(), 1.0))
    return out


def _family_best(candidates: dict[str, list[dict]], family: str, validation: set[str]) -> str | None:
    best, best_gold = None, -1.0
    for name, recs in candidates.items():
        if family_of(name) != family:
            continue
        gold = float(np.mean(per_prompt([r for r in recs if r["prompt"] in validation], lambda r: r["aligned"])))
        if gold > best_gold:
            best, best_gold = name, gold
    return best


def compare_models(candidates: dict[str, list[dict]], prompts: list[str], sbs: Any, seed: int,
                   n_bootstrap: int) -> dict:
    """The best TextNorm-family model against the best raw-family model (each chosen by gold on a validation
    split of the prompts), compared on the rest: gold of both and simulated side-by-side judgments."""
    validation, test = split_prompts(prompts, sbs.validation_fraction, seed)
    tn_best = _family_best(candidates, "textnorm", set(validation))
    raw_best = _family_best(candidates, "raw", set(validation))
    if tn_best is None or raw_best is None:
        return {"skipped": "needs at least one model of each family"}
    key = {p: i for i, p in enumerate(test)}

    def paired(name: str) -> dict[tuple[str, int], dict]:
        return {(r["prompt"], r["sample"]): r for r in candidates[name] if r["prompt"] in key}

    a, b = paired(tn_best), paired(raw_best)
    pairs = sorted(set(a) & set(b), key=lambda k: (key[k[0]], k[1]))
    out = side_by_side(np.array([a[k]["aligned"] for k in pairs]), np.array([b[k]["aligned"] for k in pairs]),
                       np.array([key[k[0]] for k in pairs]), sbs.annotators, sbs.flip, sbs.unsure, seed,
                       n_bootstrap)
    out.update({"textnorm_model": tn_best, "raw_model": raw_best, "validation_prompts": len(validation),
                "test_prompts": len(test),
                "gold_textnorm": mean_ci(per_prompt(list(a.values()), lambda r: r["aligned"], test), n_bootstrap),
                "gold_raw": mean_ci(per_prompt(list(b.values()), lambda r: r["aligned"], test), n_bootstrap)})
    return out


def bon_records(scores: dict[str, np.ndarray], prompts: list[str], objective: str, n: int) -> list[dict]:
    """Best-of-n picks from the pool (``scores``: objective and ``gold`` arrays, prompts x samples) as
    evaluation-like records (``sample`` = group index)."""
    picks = bon_picks(scores[objective], n)
    return [{"prompt": p, "sample": g, "aligned": bool(scores["gold"][i, picks[i, g]])}
            for i, p in enumerate(prompts) for g in range(picks.shape[1])]


def checkpoint_selection(rl: dict, prompts: list[str], fraction: float, seed: int, load: Any,
                         n_bootstrap: int) -> dict:
    """For each RL run: the checkpoint chosen (on validation prompts) by its raw reward, by its TextNorm score,
    by the lowest ensemble disagreement and the last one, each with its test gold, against the gold-best."""
    validation, test = split_prompts(prompts, fraction, seed)
    return {objective: _select_checkpoints(objective, [e["tag"] for e in run["evals"]], set(validation), set(test),
                                           load, n_bootstrap) for objective, run in rl.items()}


def _select_checkpoints(objective: str, tags: list[str], val: set[str], test: set[str], load: Any,
                        n_bootstrap: int) -> dict:
    recs = {t: load(t) for t in tags}

    def val_mean(tag: str, key: str | None) -> float:
        rows = [r for r in recs[tag] if r["prompt"] in val]
        return float(np.nanmean(per_prompt(rows, lambda r: r["aligned"] if key is None else r["scores"][key])))

    raw_key, tn_key = _selection_keys(objective)
    rules = {"raw reward": lambda t: val_mean(t, raw_key),
             "textnorm score": lambda t: val_mean(t, tn_key),
             "last checkpoint": lambda t: float(tags.index(t)),
             "ORACLE gold (validation)": lambda t: val_mean(t, None)}
    if "disagreement-tn" in recs[tags[0]][0]["scores"]:
        rules["ensemble disagreement (lowest)"] = lambda t: -val_mean(t, "disagreement-tn")
    row = {}
    for rule, key in rules.items():
        chosen = max(tags, key=key)
        row[rule] = {"checkpoint": chosen,
                     "gold": mean_ci(per_prompt([r for r in recs[chosen] if r["prompt"] in test],
                                                lambda r: r["aligned"]), n_bootstrap)}
    return row


def paired_finals(runs: dict, prompts: list[str], load: Any, n_bootstrap: int) -> dict:
    """Per reward fine-tuned raw and through TextNorm (and the mean ensembles of both): the final gold of the
    TextNorm run minus the raw run's, paired over ``prompts`` (the same prompts and noise), with its CI.

    Example:
        >>> recs = {"r": [{"prompt": "p", "aligned": 1.0}, {"prompt": "q", "aligned": 1.0}],
        ...         "t": [{"prompt": "p", "aligned": 0.0}, {"prompt": "q", "aligned": 1.0}]}
        >>> runs = {o: {"evals": [{"tag": t}]} for o, t in (("raw/x", "r"), ("tn/x", "t"))}
        >>> paired_finals(runs, ["p", "q"], recs.__getitem__, 200)["x"]["difference"]["mean"]
        -0.5
    """
    pairs = {name[4:]: (name, "tn/" + name[4:]) for name in runs if name.startswith("raw/")}
    pairs["mean ensemble"] = ("ens-mean-raw", "ens-mean-tn")
    out = {}
    for reward, (raw, tn) in pairs.items():
        if raw not in runs or tn not in runs:
            continue
        gold = lambda r: r["aligned"]  # noqa: E731
        diff = (per_prompt(load(runs[tn]["evals"][-1]["tag"]), gold, prompts)
                - per_prompt(load(runs[raw]["evals"][-1]["tag"]), gold, prompts))
        out[reward] = {"raw": raw, "textnorm": tn, "difference": mean_ci(diff, n_bootstrap)}
    return out


def _selection_keys(objective: str) -> tuple[str, str]:
    """The raw and TextNorm scores a run's checkpoints are compared by (its own reward's two views)."""
    if objective.startswith(("raw/", "tn/")):
        name = objective.split("/", 1)[1]
        return f"raw/{name}", f"tn/{name}"
    return "ens-mean-raw", "ens-mean-tn"


def compare(cfg: StudyConfig, train_prompts: list[str], eval_prompts: list[str], pool_scores: dict[str, np.ndarray],
            sft: dict | None, rl: dict | None, evaluations: Path, draft: dict | None = None) -> dict:
    """Side-by-side judgments per method (best-of-n on the pool of ``train_prompts``; SFT, RL and DRaFT on the stored
    evaluations of ``eval_prompts``), and RL and DRaFT checkpoint selection without gold."""
    sbs, n_boot = cfg.side_by_side, cfg.bootstrap
    out: dict[str, Any] = {}
    objectives = cfg.objective_names()
    out["bon"] = compare_models({o: bon_records(pool_scores, train_prompts, o, sbs.best_of) for o in objectives},
                                train_prompts, sbs, cfg.seed, n_boot)
    out["bon"]["n"] = sbs.best_of
    load = lambda tag: read_json(evaluations / f"{tag}.json")  # noqa: E731
    sft = sft or {}
    if sft and not sft.get("skipped"):
        out["sft"] = compare_models({o: load(r["tag"]) for o, r in sft.items() if o not in SFT_CONTROLS}, eval_prompts,
                                    sbs, cfg.seed, n_boot)
    rl = rl or {}
    if rl and not rl.get("skipped"):
        out["rl"] = compare_models({o: load(r["evals"][-1]["tag"]) for o, r in rl.items()}, eval_prompts, sbs,
                                   cfg.seed, n_boot)
        out["checkpoint_selection"] = checkpoint_selection(rl, eval_prompts, sbs.validation_fraction, cfg.seed,
                                                           load, n_boot)
    draft = draft or {}
    if draft and not draft.get("skipped"):
        # The drift control is a row of DRaFT's tables, never a model in the comparison or the selection.
        runs = {o: r for o, r in draft.items() if o not in DRAFT_CONTROLS}
        out["draft"] = compare_models({o: load(r["evals"][-1]["tag"]) for o, r in runs.items()}, eval_prompts, sbs,
                                      cfg.seed, n_boot)
        out["draft_checkpoint_selection"] = checkpoint_selection(runs, eval_prompts, sbs.validation_fraction,
                                                                 cfg.seed, load, n_boot)
        out["draft_pairs"] = paired_finals(runs, eval_prompts, load, n_boot)
    return out
