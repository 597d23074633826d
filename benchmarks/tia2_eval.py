"""Speed of `textnorm tia2 eval` vs. a plain per-prompt scikit-learn/scipy loop, in one run.

Writes a scores file for 4 models x all 27,500 TIA2 images, then times
 (a) `textnorm tia2 eval --scores FILE --json` end to end (a fresh process: start-up, file reading,
     validation, metrics and bootstrap CIs), and
 (b) the same work done plainly: read the file, then per prompt call scikit-learn / scipy, then the
     same bootstrap.
Both results are compared so the speed-up is not bought with wrong numbers.

    python benchmarks/tia2_eval.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from textnorm_t2i.bench.evaluate import summarize
from textnorm_t2i.bench.metrics import METRICS
from textnorm_t2i.bench.tia2 import load_benchmark

MODELS = ("m1", "m2", "m3", "m4")


def write_scores(path: Path) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for name, subset in load_benchmark().items():
            for model in MODELS:
                # Rounded scores so that ties occur, as with real reward models at low precision.
                for img, v in zip(subset.images, np.round(rng.normal(size=len(subset.images)), 2)):
                    f.write(json.dumps({"subset": name, "image": img, "model": model, "score": float(v)}) + "\n")


def plain_loop(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    bench = load_benchmark()
    scores: dict = {}
    for r in rows:
        scores.setdefault(r["subset"], {}).setdefault(r["model"], {})[r["image"]] = float(r["score"])
    out: dict = {}
    for name, models in scores.items():
        s = bench[name]
        for model, by_image in models.items():
            per = {m: [] for m in METRICS}
            for prompt in s.evaluated_prompts:
                idx = s.prompt_images[prompt]
                names = [s.images[i] for i in idx]
                y, h = s.aligned[idx], s.human_score[idx]
                x = np.array([by_image[n] for n in names])
                per["auroc"].append(roc_auc_score(y, x))
                per["auprc"].append(average_precision_score(y, x))
                order = sorted(range(len(x)), key=lambda i: (-x[i], names[i]))
                for key, k in (("ap5", 5), ("ap10", 10), ("ap25", 25)):
                    hits, precs = 0, []
                    for rank, i in enumerate(order[:k], 1):
                        if y[i]:
                            hits += 1
                            precs.append(hits / rank)
                    per[key].append(float(np.mean(precs)) if precs else 0.0)
                rho, tau = spearmanr(x, h).statistic, kendalltau(x, h).statistic
                per["spearman"].append(0.0 if np.isnan(rho) else rho)
                per["kendall"].append(0.0 if np.isnan(tau) else tau)
            out.setdefault(name, {})[model] = summarize({m: np.array(v) for m, v in per.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for each side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scores.jsonl"
        write_scores(path)
        n_rows = sum(1 for _ in path.open())
        cmd = [sys.executable, "-m", "textnorm_t2i.cli", "tia2", "eval", "--scores", str(path), "--json"]
        ours, theirs = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            reference = plain_loop(path)
            theirs.append(time.perf_counter() - t)
        result = json.loads(proc.stdout)
        worst = max(abs(result[s][m][k] - reference[s][m][k]) for s in reference for m in reference[s] for k in METRICS)
    print(f"scores file: {n_rows} rows ({len(MODELS)} models x 27,500 images)")
    print(f"textnorm tia2 eval (end to end, best of {args.repeats}): {min(ours):.2f} s")
    print(f"plain per-prompt scikit-learn/scipy loop (best of {args.repeats}): {min(theirs):.2f} s")
    print(f"largest difference between the two results: {worst:.1e}")
    print(f"speed-up {min(theirs) / min(ours):.1f}x")


if __name__ == "__main__":
    main()
