"""Reading per-image score files (JSONL or CSV) for ``textnorm tia2 eval``, with line-exact errors.

Columns: ``subset``, ``image`` (the benchmark image file name), ``score``, optional ``model``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from pathlib import Path

from textnorm_t2i.bench.tia2 import Subset, benchmark_subsets, load_subset
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import iter_jsonl, read_text

REQUIRED = ("subset", "image", "score")
DEFAULT_MODEL = "score"

# {subset: {model: {image: score}}}
Scores = dict[str, dict[str, dict[str, float]]]


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    text = read_text(path)
    if not text.strip():
        raise InputError(f"{path}: file is empty")
    is_csv = path.suffix.lower() == ".csv" or (
        path.suffix.lower() not in (".jsonl", ".json", ".ndjson") and not text.lstrip().startswith("{")
    )
    if is_csv:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        absent = [c for c in REQUIRED if c not in header]
        if absent:
            raise InputError(f"{path}:1: missing column(s) {', '.join(absent)} (header: {','.join(header)})")
        has_model = "model" in header
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise InputError(f"{path}:{reader.line_num}: expected {len(header)} fields")
            if not has_model:
                row.pop("model", None)
            yield reader.line_num, row
        return
    yield from iter_jsonl(path, text, REQUIRED)


def _parse_score(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{where}: score is not a number: {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"{where}: score is not a number: {value!r}") from None
    if not isinstance(value, (int, float)):
        raise InputError(f"{where}: score is not a number: {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{where}: score must be finite, got {value}")
    return value


def read_scores(
    path: str | os.PathLike, benchmark: str | os.PathLike | None = None
) -> tuple[Scores, dict[str, Subset]]:
    """Read and validate a scores file against a benchmark (the shipped TIA2 by default).

    Returns ``({subset: {model: {image: score}}}, {subset: Subset})`` for the subsets in the file.
    Any problem raises :class:`InputError` naming the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
        >>> _ = p.write_text("subset,image,score\\ncounting,image_0_0_0.jpg,0.5\\n")
        >>> scores, subsets = read_scores(p)
        >>> scores
        {'counting': {'score': {'image_0_0_0.jpg': 0.5}}}
    """
    path = Path(path)
    available = benchmark_subsets(benchmark)
    subsets: dict[str, Subset] = {}
    scores: Scores = {}
    first_line: dict[tuple[str, str, str], int] = {}
    has_model: bool | None = None
    for lineno, row in _records(path):
        where = f"{path}:{lineno}"
        row_has_model = "model" in row
        if has_model is None:
            has_model = row_has_model
        elif row_has_model != has_model:
            raise InputError(f"{where}: 'model' given on some rows but not others")
        subset, image = row["subset"], row["image"]
        model = row["model"] if row_has_model else DEFAULT_MODEL
        for key, value in (("subset", subset), ("image", image), ("model", model)):
            if not isinstance(value, str) or not value:
                raise InputError(f"{where}: {key} must be a non-empty string, got {value!r}")
        if subset not in available:
            raise InputError(f"{where}: unknown subset {subset!r} (expected one of {', '.join(available)})")
        if subset not in subsets:
            subsets[subset] = load_subset(subset, benchmark)
        if image not in subsets[subset].image_index:
            raise InputError(f"{where}: unknown image {image!r} in subset {subset!r}")
        score = _parse_score(row["score"], where)
        key = (subset, model, image)
        if key in first_line:
            raise InputError(f"{where}: duplicate score for {subset}/{image} (model {model!r}), "
                             f"first given on line {first_line[key]}")
        first_line[key] = lineno
        scores.setdefault(subset, {}).setdefault(model, {})[image] = score
    if not scores:
        raise InputError(f"{path}: no scores found")
    return scores, subsets
