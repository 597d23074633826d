"""Scoring image files with a reward, in chunks, with a progress bar and clear errors for bad images."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from textnorm_t2i.distributed import process_rank_world
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import iter_jsonl, open_image, read_text
from textnorm_t2i.rewards.base import Reward, as_reward


def read_manifest(path: str | os.PathLike) -> list[tuple[Path, str]]:
    """``(image path, prompt)`` pairs from a JSONL or CSV manifest with keys ``image`` and ``prompt``.

    Relative image paths are taken relative to the manifest's folder.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
        >>> _ = p.write_text("image,prompt\\na.png,a cat\\n")
        >>> [(x.name, y) for x, y in read_manifest(p)]
        [('a.png', 'a cat')]
    """
    path = Path(path)
    text = read_text(path)
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        absent = [c for c in ("image", "prompt") if c not in (reader.fieldnames or [])]
        if absent:
            raise InputError(f"{path}:1: missing column(s) {', '.join(absent)}")
        rows = [(reader.line_num, r) for r in reader]
    else:
        rows = list(iter_jsonl(path, text, ("image", "prompt")))
    if not rows:
        raise InputError(f"{path}: no rows found")
    out = []
    for lineno, row in rows:
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise InputError(f"{path}:{lineno}: prompt must be a non-empty string")
        image = Path(str(row["image"]))
        out.append((image if image.is_absolute() else path.parent / image, row["prompt"]))
    return out


def score_files(reward: Reward, images: Sequence[Path], prompts: Sequence[str], chunk: int = 256,
                skip_unreadable: bool = False, progress: bool = True) -> tuple[list[float | None], list[Path]]:
    """Score image files against prompts; returns (scores, None where skipped) and the skipped files.

    Example:
        >>> score_files(lambda i, p: [0.0], [Path("missing.png")], ["x"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: missing.png: image not found
    """
    from tqdm.auto import tqdm

    reward = as_reward(reward)
    if not skip_unreadable:  # a missing file fails before any work, not half-way through
        for path in images:
            if not Path(path).is_file():
                raise InputError(f"{path}: image not found")
    scores: list[float | None] = [None] * len(images)
    skipped: list[Path] = []
    # Under `accelerate launch`, process r scores chunks r, r + world, ...: each chunk is the same batch as in
    # one process, so the gathered scores are the same numbers, in the original order.
    rank, world = process_rank_world()
    starts = list(range(0, len(images), chunk))[rank::world]
    bar = tqdm(total=sum(min(chunk, len(images) - lo) for lo in starts), desc=f"scoring ({reward.name})",
               unit="img", disable=not progress or rank > 0, leave=False)
    try:
        for lo in starts:
            batch, idx = [], []
            for i in range(lo, min(lo + chunk, len(images))):
                try:
                    batch.append(open_image(images[i]))
                    idx.append(i)
                except InputError:
                    if not skip_unreadable:
                        raise
                    skipped.append(images[i])
            if batch:
                with torch.no_grad():
                    values = reward.score(batch, [prompts[i] for i in idx])
                for i, v in zip(idx, values.tolist()):
                    scores[i] = float(v)
            bar.update(min(chunk, len(images) - lo))
    finally:
        bar.close()
    if world > 1:
        from accelerate.utils import gather_object

        mine = [(i, scores[i]) for lo in starts for i in range(lo, min(lo + chunk, len(images)))]
        for i, v in gather_object(mine):
            scores[i] = v
        skipped = sorted({Path(p) for p in gather_object([str(p) for p in skipped])}, key=images.index)
    return scores, skipped
