"""Simulated annotators, and writing a benchmark in exactly the TIA2 file layout.

Each annotator reports the oracle's verdict, flipped with probability ``flip``, or "unsure" (-1)
with probability ``unsure``. The written files load with :func:`textnorm_t2i.bench.tia2.load_subset` and
evaluate with ``textnorm tia2 eval --benchmark DIR`` unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from textnorm_t2i.errors import InputError
from textnorm_t2i.world.oracle import judge


def simulate_votes(verdicts: Sequence[bool], n_annotators: int = 3, flip: float = 0.1, unsure: float = 0.03,
                   seed: int = 0) -> np.ndarray:
    """Votes in {1, 0, -1}, shape ``(len(verdicts), n_annotators)``, from true verdicts.

    Example:
        >>> simulate_votes([True, False], flip=0.0, unsure=0.0).tolist()
        [[1, 1, 1], [0, 0, 0]]
    """
    if not (0 <= flip <= 1 and 0 <= unsure <= 1 and flip + unsure <= 1):
        raise InputError(f"need 0 <= flip, unsure and flip + unsure <= 1, got flip={flip}, unsure={unsure}")
    truth = np.asarray(verdicts, dtype=np.int64)[:, None]
    u = np.random.default_rng(seed).random((len(truth), n_annotators))
    votes = np.where(u < unsure, -1, np.where(u < unsure + flip, 1 - truth, truth))
    return votes.astype(np.int64)


def annotate(images: Sequence[Image.Image | np.ndarray], prompts: Sequence[str], n_annotators: int = 3,
             flip: float = 0.1, unsure: float = 0.03, seed: int = 0) -> np.ndarray:
    """Votes of simulated annotators on (image, prompt) pairs, from the oracle's verdicts.

    Example:
        >>> from textnorm_t2i.world.scene import render
        >>> annotate([render("a red circle")], ["a red circle"], flip=0, unsure=0).tolist()
        [[1, 1, 1]]
    """
    if len(images) != len(prompts):
        raise InputError(f"got {len(images)} images but {len(prompts)} prompts")
    verdicts = [judge(img, p).aligned for img, p in zip(images, prompts)]
    return simulate_votes(verdicts, n_annotators, flip, unsure, seed)


def write_subset(root: str | os.PathLike, subset: str, image_names: Sequence[str], captions: Sequence[str],
                 votes: np.ndarray, prompt_sets: Mapping[str, Sequence[str]] | None = None,
                 images: Sequence[Image.Image] | None = None) -> Path:
    """Write one subset in the TIA2 layout under ``root``; everything appears at once or not at all.

    Files: ``human_annotations/human_labels_<subset>.json``, ``prompts/prompt_set_<subset>.json``
    (when ``prompt_sets``) and ``images/<subset>/<image>`` (when ``images``).

    Example:
        >>> import tempfile
        >>> from textnorm_t2i.bench.tia2 import load_subset
        >>> root = tempfile.mkdtemp()
        >>> _ = write_subset(root, "toy", ["image_0_0_0.png"], ["a red circle"], np.array([[1, 1, 0]]))
        >>> load_subset("toy", benchmark=root).votes
        [[1, 1, 0]]
    """
    root = Path(root)
    if not (len(image_names) == len(captions) == len(votes)) or (images is not None and len(images) != len(votes)):
        raise InputError("image names, captions, votes (and images) must have the same length")
    labels = {name: {"image": name, "caption": cap, "human_labels": [int(v) for v in row]}
              for name, cap, row in zip(image_names, captions, votes)}
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{subset}.", dir=root))
    try:
        (staging / "human_annotations").mkdir()
        (staging / "human_annotations" / f"human_labels_{subset}.json").write_text(json.dumps(labels, indent=1))
        if prompt_sets is not None:
            (staging / "prompts").mkdir()
            (staging / "prompts" / f"prompt_set_{subset}.json").write_text(
                json.dumps({p: list(s) for p, s in prompt_sets.items()}, indent=1))
        if images is not None:
            (staging / "images" / subset).mkdir(parents=True)
            for name, img in zip(image_names, images):
                img.save(staging / "images" / subset / name)
        # Move the finished pieces into place; each piece is one rename.
        for piece in [p for p in staging.rglob("*") if p.is_file() or (p.parent.name == "images" and p.is_dir())]:
            rel = piece.relative_to(staging)
            if rel.parts[0] == "images" and len(rel.parts) > 2:
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(piece, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
