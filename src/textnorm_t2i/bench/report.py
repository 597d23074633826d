"""Rendering benchmark results as a terminal table, Markdown, CSV or JSON.

Results have the shape ``{subset: {model: {"n_prompts", <metric>..., "ci": {metric: [low, high]}}}}``.
"""

from __future__ import annotations

import json

from textnorm_t2i import tables
from textnorm_t2i.bench.metrics import METRICS

FORMATS = ("table", "markdown", "csv")
_HEADER = {"auroc": "AUROC", "auprc": "AUPRC", "ap5": "AP@5", "ap10": "AP@10", "ap25": "AP@25",
           "spearman": "Spearman", "kendall": "Kendall"}


def _cell(row: dict, metric: str) -> str:
    value = row.get(metric)
    if value is None:
        return "-"
    low, high = row["ci"][metric]
    return f"{value:.3f} ±{(high - low) / 2:.3f}"


def _rows(results: dict) -> list[list[str]]:
    return [
        [subset, model, str(row["n_prompts"])] + [_cell(row, m) for m in METRICS]
        for subset, models in results.items()
        for model, row in models.items()
    ]


def to_json(results: dict) -> str:
    """Results as indented JSON (the ``--json`` output)."""
    return json.dumps(results, indent=2)


def to_csv(results: dict) -> str:
    """One row per (subset, model) with value, CI low and CI high per metric.

    Example:
        >>> r = {"counting": {"clip": {"n_prompts": 2, "auroc": 0.6, "ci": {"auroc": [0.5, 0.7]}}}}
        >>> to_csv(r).splitlines()[1]
        'counting,clip,2,0.6,0.5,0.7'
    """
    metrics = [m for m in METRICS if any(m in row for ms in results.values() for row in ms.values())]
    header = ["subset", "model", "n_prompts"] + [f"{m}{s}" for m in metrics for s in ("", "_low", "_high")]
    rows = []
    for subset, models in results.items():
        for model, row in models.items():
            cells = [subset, model, row["n_prompts"]]
            for m in metrics:
                cells += [row.get(m), *row["ci"].get(m, [None, None])]
            rows.append(cells)
    return tables.csv_text(header, rows)


def to_markdown(results: dict, note: str | None = None) -> str:
    """A Markdown table; each cell is the mean ± half the width of its 95% CI."""
    header = ["subset", "model", "prompts"] + [_HEADER[m] for m in METRICS]
    text = tables.markdown(header, _rows(results), text_columns=2)
    return text + ("\n\n" + note if note else "") + "\n"


def to_table(results: dict, title: str | None = None, note: str | None = None) -> str:
    """A boxed, aligned terminal table; subsets are separated by rules.

    Example:
        >>> r = {"counting": {"clip": {"n_prompts": 2, "auroc": 0.6, "ci": {"auroc": [0.5, 0.7]}}}}
        >>> "0.600 ±0.100" in to_table(r)
        True
    """
    header = ["subset", "model", "prompts"] + [_HEADER[m] for m in METRICS]
    out = [tables.terminal(header, _rows(results), text_columns=2, title=title, group_column=0),
           "Cells: mean over prompts ±half-width of the 95% bootstrap CI (1000 resamples over prompts)."]
    if note:
        out.append(note)
    return "\n".join(out) + "\n"


def render(results: dict, fmt: str = "table", as_json: bool = False, title: str | None = None,
           note: str | None = None) -> str:
    """Render results in one of :data:`FORMATS`, or JSON when ``as_json``."""
    if as_json:
        return to_json(results) + "\n"
    if fmt == "csv":
        return to_csv(results)
    if fmt == "markdown":
        return to_markdown(results, note)
    return to_table(results, title, note)
