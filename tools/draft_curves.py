"""One picture of DRaFT runs from their records: the optimised reward's change from the base, gold alignment,
fidelity and KL from the base per evaluation, with 95% bands (paired over the same held-out images).

    python tools/draft_curves.py docs/draft/clip-a-200 docs/draft/clip-a-tn-200 docs/draft/detect \
        docs/draft/detect-tn -o docs/draft/curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

PANELS = (("objective", "optimised reward − base (in SDs of its base scores)"),
          ("aligned", "gold alignment − base (paired)"), ("fidelity", "fidelity − base (paired)"),
          ("kl_base", "KL from base (nats, σ ≥ 0.05)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (or record folders) with samples.jsonl")
    parser.add_argument("-o", "--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textnorm_t2i.finetune.report import _read_samples, paired_change

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.3 * len(PANELS), 3.6))
    for i, run in enumerate(args.runs):
        records = [r for r in _read_samples(Path(run) / "samples.jsonl") if r.get("split", "eval") == "eval"]
        steps = sorted({r["step"] for r in records})
        for ax, (key, title) in zip(axes, PANELS):
            values = [paired_change(records, key, steps[0], s)[:2] if s else (0.0, 0.0) for s in steps]
            mean, se = np.array([v[0] for v in values]), np.array([v[1] for v in values])
            if key == "objective":  # rewards differ in scale: in units of the spread of the base model's scores
                spread = float(np.std([float(r[key]) for r in records if r["step"] == steps[0]]))
                mean, se = mean / spread, se / spread
            ax.plot(steps, mean, marker="o", ms=3, color=f"C{i}", label=Path(run).name)
            ax.fill_between(steps, mean - 1.96 * se, mean + 1.96 * se, color=f"C{i}", alpha=0.2)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left")
    fig.suptitle("DRaFT-2 on the embedded generator: held-out prompts, fixed noise; bands: 95% CI of the paired "
                 "change", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
