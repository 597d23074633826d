"""A fine-tuning run's own report: ``report.html`` in the run folder, self-contained (plots and grids embedded).

For SFT, RL and DRaFT: the optimised reward, the raw and TextNorm rewards, gold alignment, drift and KL from
the base at every evaluation, and their change from the first to the last evaluation over the same images
(paired, mean ± standard error), as means with 95% bootstrap bands over the evaluation prompts (from
``samples.jsonl``, one line per evaluated image); the base model's and the tuned model's grids side by side,
and a table of each prompt's verdict before and after. For best-of-n: the curve of every value against n with bands.

Example:
    >>> import tempfile, pathlib
    >>> write_run_report(pathlib.Path(tempfile.mkdtemp()))  # nothing evaluated yet: no report
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from textnorm_t2i.bench.evaluate import summarize
from textnorm_t2i.io import atomic_write

VALUES = [("objective", "optimised reward"), ("raw_reward", "raw reward"), ("textnorm_reward", "TextNorm reward"),
          ("aligned", "gold alignment (oracle)"), ("fidelity", "fidelity (every object recognisable)"),
          ("drift", "drift from base (pixel MSE)"),
          ("kl_base", "KL from base (nats, steps with σ ≥ kl_min_std)")]
CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
       "img{max-width:100%}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
       "padding:3px 8px;font-size:13px;vertical-align:top}.no{color:#b00}.yes{color:#070}")


def _bands(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of per-prompt values (the benchmark's own bootstrap)."""
    v = values[~np.isnan(values)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    s = summarize({"x": v}, 1000, 0)
    return float(s["x"]), float(s["ci"]["x"][0]), float(s["ci"]["x"][1])


def png_data_uri(fig: Any, dpi: int = 100) -> str:
    """A matplotlib figure as an embedded ``data:image/png`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _read_samples(path: Path) -> list[dict]:
    """The per-image records of a run (a line that is not one, e.g. written by hand, is left out)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step", record.get("n")), int) and \
                isinstance(record.get("prompt"), str):
            records.append(record)
    return records


def _image(record: dict) -> tuple[str, int]:
    """Which evaluation image a record is: its prompt and its sample index (one image per prompt: 0)."""
    return record["prompt"], int(record.get("sample", 0))


def paired_change(samples: list[dict], key: str, first: int, last: int) -> tuple[float, float, int]:
    """Mean change of ``key`` from step ``first`` to step ``last`` over the same evaluation images (same prompt,
    same noise), its standard error and the number of pairs.

    Example:
        >>> rows = [{"step": 0, "prompt": "a", "x": 1.0}, {"step": 0, "prompt": "b", "x": 2.0},
        ...         {"step": 5, "prompt": "a", "x": 2.0}, {"step": 5, "prompt": "b", "x": 4.0}]
        >>> paired_change(rows, "x", 0, 5)
        (1.5, 0.5, 2)
    """
    before = {_image(s): float(s[key]) for s in samples if s["step"] == first and key in s}
    after = {_image(s): float(s[key]) for s in samples if s["step"] == last and key in s}
    diffs = np.array([after[p] - before[p] for p in after if p in before], dtype=np.float64)
    if len(diffs) < 2:
        return float("nan"), float("nan"), len(diffs)
    return float(diffs.mean()), float(diffs.std(ddof=1) / np.sqrt(len(diffs))), len(diffs)


def curves(samples: list[dict]) -> dict[str, list[tuple[int, float, float, float]]]:
    """``{value: [(step, mean, low, high)]}`` over evaluation steps (bands over prompts)."""
    steps = sorted({s["step"] for s in samples})
    out: dict[str, list] = {}
    for key, _ in VALUES:
        rows = []
        for step in steps:
            vals = np.array([float(s[key]) for s in samples if s["step"] == step and key in s], dtype=np.float64)
            if len(vals):
                rows.append((step, *_bands(vals)))
        if rows:
            out[key] = rows
    return out


def _curve_plot(c: dict, xlabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(c))  # at most four panels a row: seven in one row are too small to read
    nrows = -(-len(c) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(c):]:
        ax.axis("off")
    for ax, (key, rows) in zip(axes, c.items()):
        x = [r[0] for r in rows]
        ax.plot(x, [r[1] for r in rows], marker="o", color="C0")
        ax.fill_between(x, [r[2] for r in rows], [r[3] for r in rows], color="C0", alpha=0.25, label="95% CI")
        ax.set_title(dict(VALUES)[key], fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return png_data_uri(fig)


def _verdict(s: dict | None) -> str:
    if s is None or "aligned" not in s:
        return "–"
    cls, word = ("yes", "aligned") if s["aligned"] else ("no", "not aligned")
    reasons = "; ".join(s.get("reasons") or [])
    return f"<span class={cls}>{word}</span>" + (f"<br><small>{html.escape(reasons)}</small>" if reasons else "")


def write_run_report(out: Path, title: str = "") -> Path | None:
    """Write ``out/report.html`` from the run's ``samples.jsonl`` (SFT/RL) or ``bon.csv`` (best-of-n); returns
    its path, or None when the run has nothing evaluated yet."""
    out = Path(out)
    h = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title or out.name)}</title>"
         f"<style>{CSS}</style></head><body><h1>{html.escape(title or 'Fine-tuning run')}: {html.escape(str(out))}"
         "</h1>"]
    samples_path, bon_path = out / "samples.jsonl", out / "bon_samples.jsonl"
    if samples_path.is_file():
        every = _read_samples(samples_path)
        samples = [r for r in every if r.get("split", "eval") == "eval"]
        trained = [r for r in every if r.get("split") == "train"]
        if not samples:
            return None
        steps = sorted({s["step"] for s in samples})
        c = curves(samples)
        h += ["<h2>Over training</h2><p>Means over the evaluation images (fixed seeds) with 95% "
              "bootstrap bands over images.</p>", f"<img src='{_curve_plot(c, 'step')}' alt='curves'>"]
        rows = "".join(f"<tr><td>{html.escape(dict(VALUES)[k])}</td>" + "".join(
            f"<td>{m:.4g} [{lo:.4g}, {hi:.4g}]</td>" for _, m, lo, hi in r) + "</tr>" for k, r in c.items())
        h.append("<table><tr><th></th>" + "".join(f"<th>step {s}</th>" for s in steps) + f"</tr>{rows}</table>")
        first, last = steps[0], steps[-1]
        changes = [(label, *paired_change(samples, key, first, last)) for key, label in VALUES]
        h.append(f"<table><tr><th>change from step {first} to {last}, over the same images</th><th>mean ± SE</th>"
                 "<th>pairs</th></tr>" + "".join(
                     f"<tr><td>{html.escape(label)}</td><td>{m:+.4g} ± {se:.2g}</td><td>{n}</td></tr>"
                     for label, m, se, n in changes if n >= 2) + "</table>")
        if trained:
            changes = [(label, *paired_change(trained, key, first, last)) for key, label in VALUES
                       if key in ("objective", "aligned", "fidelity")]
            h.append(f"<table><tr><th>training prompts (fresh noise): change from step {first} to {last}</th>"
                     "<th>mean ± SE</th><th>pairs</th></tr>" + "".join(
                         f"<tr><td>{html.escape(label)}</td><td>{m:+.4g} ± {se:.2g}</td><td>{n}</td></tr>"
                         for label, m, se, n in changes if n >= 2) + "</table>")
        grids = [(s, out / "grids" / f"step_{s:05d}.png") for s in (first, last)]
        h.append("<h2>Base vs tuned</h2><table><tr>" + "".join(
            f"<th>step {s}</th>" for s, _ in grids) + "</tr><tr>" + "".join(
            f"<td><img src='{_file_png(p)}' alt='step {s}'></td>" if p.is_file() else "<td>–</td>"
            for s, p in grids) + "</tr></table>")
        before = {_image(s): s for s in samples if s["step"] == first}
        after = {_image(s): s for s in samples if s["step"] == last}
        h.append(f"<table><tr><th>prompt</th><th>optimised reward, step {first} → {last}</th><th>verdict at step "
                 f"{first}</th><th>verdict at step {last}</th></tr>" + "".join(
                     f"<tr><td>{html.escape(p[0])}{f' (image {p[1] + 1})' if p[1] else ''}</td>"
                     f"<td>{before[p]['objective']:.4g} → {after[p]['objective']:.4g}"
                     f"</td><td>{_verdict(before.get(p))}</td><td>{_verdict(after.get(p))}</td></tr>"
                     for p in after if p in before) + "</table>")
    elif bon_path.is_file():
        samples = _read_samples(bon_path)
        c = curves([{**s, "step": s["n"]} for s in samples])
        h += ["<h2>Best of n</h2><p>Values of each prompt's best-of-n picks (mean over its disjoint groups), "
              "mean over prompts with 95% bootstrap bands.</p>", f"<img src='{_curve_plot(c, 'n')}' alt='curves'>"]
        if (out / "grid.png").is_file():
            h.append(f"<h2>Best of n_max</h2><img src='{_file_png(out / 'grid.png')}' alt='grid'>")
    else:
        return None
    h.append("</body></html>")
    with atomic_write(out / "report.html") as f:
        f.write("\n".join(h))
    return out / "report.html"
