"""Loading TIA2 (or any benchmark laid out like it).

A benchmark folder holds, per subset ``S``:

- ``human_annotations/human_labels_S.json``: ``{image_file: {"image", "caption", "human_labels"}}``
- ``prompts/prompt_set_S.json`` (optional): ``{prompt: [contrastive prompt, ...]}``
- ``alignment_scores/alignment_scores_S.json`` (optional): published per-prompt metrics
- ``images/`` (optional): the image files, in ``images/S/`` or directly in ``images/``

The real TIA2 annotations ship inside the package (``textnorm/data/tia2``); the images do not.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import read_json

SUBSETS = ("counting", "composition", "comprehensive")
_LABEL_FILE = re.compile(r"^human_labels_(.+)\.json$")


def shipped_tia2_dir() -> Path:
    """Folder of the TIA2 annotations shipped with the package.

    Example:
        >>> (shipped_tia2_dir() / "LICENSE").exists()
        True
    """
    return Path(str(resources.files("textnorm_t2i") / "data" / "tia2"))


@dataclass
class Subset:
    """One benchmark subset: its images, their prompts and votes, and the contrastive prompt sets.

    Attributes:
        name: subset name, e.g. ``"counting"``.
        images: image file names, in file order.
        captions: the prompt of each image.
        votes: one list of votes per image; 1 = aligned, 0 = not aligned, -1 = unsure.
        prompt_sets: contrastive prompt set per prompt (may be empty).
        published: published per-prompt metrics ``{prompt: {model: {metric: value}}}`` or None.
        image_dir: folder holding the image files, when known.

    Example:
        >>> s = load_subset("counting")
        >>> len(s.prompts), len(s.images), len(s.evaluated_prompts)
        (150, 7500, 146)
    """

    name: str
    images: list[str]
    captions: list[str]
    votes: list[list[int]]
    prompt_sets: dict[str, list[str]] = field(default_factory=dict)
    published: dict[str, dict] | None = None
    image_dir: Path | None = None

    @cached_property
    def prompts(self) -> list[str]:
        """Distinct prompts in order of first appearance."""
        return list(dict.fromkeys(self.captions))

    @cached_property
    def image_index(self) -> dict[str, int]:
        """Position of each image file name in :attr:`images`."""
        return {name: i for i, name in enumerate(self.images)}

    @cached_property
    def prompt_images(self) -> dict[str, np.ndarray]:
        """Indices (into :attr:`images`) of each prompt's images."""
        groups: dict[str, list[int]] = {p: [] for p in self.prompts}
        for i, caption in enumerate(self.captions):
            groups[caption].append(i)
        return {p: np.asarray(idx, dtype=np.int64) for p, idx in groups.items()}

    @cached_property
    def name_rank(self) -> np.ndarray:
        """Rank of each image's file name in ascending order (breaks score ties in AP@k)."""
        rank = np.empty(len(self.images), dtype=np.int64)
        rank[np.argsort(np.array(self.images), kind="stable")] = np.arange(len(self.images))
        return rank

    @cached_property
    def n_yes(self) -> np.ndarray:
        """Number of votes equal to 1, per image."""
        return np.array([sum(v == 1 for v in votes) for votes in self.votes], dtype=np.int64)

    @cached_property
    def n_votes(self) -> np.ndarray:
        """Number of votes (including unsure ones), per image."""
        return np.array([len(v) for v in self.votes], dtype=np.int64)

    @cached_property
    def aligned(self) -> np.ndarray:
        """True where a strict majority of votes is 1 (at least 2 of 3); unsure (-1) is not a 1."""
        return 2 * self.n_yes > self.n_votes

    @cached_property
    def human_score(self) -> np.ndarray:
        """Fraction of votes equal to 1, per image."""
        return self.n_yes / self.n_votes

    @cached_property
    def evaluated_prompts(self) -> list[str]:
        """Prompts with both aligned and non-aligned images (the only ones a ranking can be scored on)."""
        out = []
        for p, idx in self.prompt_images.items():
            a = self.aligned[idx]
            if a.any() and not a.all():
                out.append(p)
        return out

    def aligned_fraction(self, prompt: str) -> float:
        """Fraction of the prompt's images judged aligned (the published ``human`` value)."""
        return float(self.aligned[self.prompt_images[prompt]].mean())

    def image_path(self, image: str, must_exist: bool = True) -> Path:
        """Path of an image file inside :attr:`image_dir`; with ``must_exist=False`` a missing image (or a subset
        without a folder) gives the path where it would be, for a caller that skips unreadable images."""
        if self.image_dir is None:
            if not must_exist:
                return Path(".") / image
            raise InputError(f"subset {self.name!r}: no image folder given (pass --images DIR)")
        for candidate in (self.image_dir / self.name / image, self.image_dir / image):
            if candidate.exists():
                return candidate
        if not must_exist:
            return self.image_dir / image
        raise InputError(f"{self.image_dir}: image {image!r} of subset {self.name!r} not found")


def _parse_labels(path: Path, subset: str) -> tuple[list[str], list[str], list[list[int]]]:
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: expected a non-empty JSON object {{image_file: {{...}}}}")
    images, captions, votes = [], [], []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: entry {key!r}: expected an object with 'caption' and 'human_labels'")
        caption, labels = entry.get("caption"), entry.get("human_labels")
        if not isinstance(caption, str) or not caption:
            raise InputError(f"{path}: entry {key!r}: 'caption' must be a non-empty string")
        if (
            not isinstance(labels, list)
            or not labels
            or any(isinstance(v, bool) or v not in (-1, 0, 1) for v in labels)
        ):
            raise InputError(f"{path}: entry {key!r}: 'human_labels' must be a non-empty list of 1, 0 or -1")
        images.append(str(entry.get("image", key)))
        captions.append(caption)
        votes.append([int(v) for v in labels])
    if len(set(images)) != len(images):
        raise InputError(f"{path}: duplicate image names in subset {subset!r}")
    return images, captions, votes


def _parse_prompt_sets(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if not isinstance(data, dict) or any(
        not isinstance(v, list) or not all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise InputError(f"{path}: expected a JSON object {{prompt: [contrastive prompt, ...]}}")
    return data


def shipped_shapes_dir() -> Path:
    """Folder of the TIA2-Shapes benchmark shipped with the package (``--benchmark shapes``)."""
    return Path(str(resources.files("textnorm_t2i") / "data" / "benchmarks" / "shapes"))


def _resolve_root(benchmark: str | os.PathLike | None) -> Path:
    if benchmark is None or str(benchmark) == "tia2":
        return shipped_tia2_dir()
    if str(benchmark) == "shapes" and not Path("shapes").exists():
        return shipped_shapes_dir()
    root = Path(benchmark)
    if not (root / "human_annotations").is_dir():
        raise InputError(f"{root}: not a benchmark folder (expected {root / 'human_annotations'}/)")
    return root


def benchmark_subsets(benchmark: str | os.PathLike | None = None) -> list[str]:
    """Names of the subsets of a benchmark folder (the shipped TIA2 when ``None``).

    Example:
        >>> benchmark_subsets()
        ['counting', 'composition', 'comprehensive']
    """
    root = _resolve_root(benchmark)
    found = [m.group(1) for f in sorted(os.listdir(root / "human_annotations")) if (m := _LABEL_FILE.match(f))]
    # Known subsets first, in the paper's order; others alphabetically.
    return [s for s in SUBSETS if s in found] + [s for s in found if s not in SUBSETS]


def load_subset(
    name: str, benchmark: str | os.PathLike | None = None, images: str | os.PathLike | None = None
) -> Subset:
    """Load one subset of TIA2 (default) or of a benchmark folder laid out like it.

    Args:
        name: subset name (``counting``, ``composition``, ``comprehensive`` for TIA2).
        benchmark: benchmark folder; ``None`` or ``"tia2"`` for the shipped TIA2 annotations.
        images: folder with the image files (defaults to ``<benchmark>/images`` when it exists).

    Example:
        >>> s = load_subset("composition")
        >>> s.votes[0], s.captions[0]
        ([0, 0, 0], 'a realistic photo of an airplane and an apple')
    """
    root = _resolve_root(benchmark)
    available = benchmark_subsets(root)
    if name not in available:
        raise InputError(f"unknown subset {name!r} in {root} (available: {', '.join(available)})")
    image_names, captions, votes = _parse_labels(root / "human_annotations" / f"human_labels_{name}.json", name)
    sets_path = root / "prompts" / f"prompt_set_{name}.json"
    prompt_sets = _parse_prompt_sets(sets_path) if sets_path.exists() else {}
    scores_path = root / "alignment_scores" / f"alignment_scores_{name}.json"
    published = read_json(scores_path) if scores_path.exists() else None
    image_dir = Path(images) if images is not None else (root / "images" if (root / "images").is_dir() else None)
    return Subset(name, image_names, captions, votes, prompt_sets, published, image_dir)


def load_benchmark(
    benchmark: str | os.PathLike | None = None,
    subsets: list[str] | None = None,
    images: str | os.PathLike | None = None,
) -> dict[str, Subset]:
    """Load every (or the named) subset of a benchmark, keyed by subset name.

    Example:
        >>> bench = load_benchmark()
        >>> {k: len(v.images) for k, v in bench.items()}
        {'counting': 7500, 'composition': 15000, 'comprehensive': 5000}
    """
    names = subsets if subsets else benchmark_subsets(benchmark)
    return {n: load_subset(n, benchmark, images) for n in names}
