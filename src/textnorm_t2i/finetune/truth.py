"""What the fine-tuning engine asks of a ground truth, as a small protocol; the engine never imports one.

A ground truth judges images against their prompts (gold alignment, fidelity) and draws prompts of a named
subset (``prompts.subsets`` in a config). The embedded world provides one
(:class:`textnorm_t2i.world.truth.WorldTruth`); the CLI, :mod:`textnorm_t2i.trainers` and the study inject it.
A run without one logs every reward but no gold columns, and must list its prompts (``prompts.list``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from textnorm_t2i.errors import InputError


@runtime_checkable
class GroundTruth(Protocol):
    """Judges images and samples prompts of named subsets.

    Example:
        >>> class Nothing:
        ...     def judge(self, images, prompts): return None
        ...     def sample_prompts(self, subset, n, seed): return []
        >>> isinstance(Nothing(), GroundTruth)
        True
    """

    def judge(self, images: Any, prompts: list[str]) -> list[dict] | None:
        """``{"aligned": bool, "reasons": [str], "fidelity": bool}`` per image, or None where it cannot judge
        these prompts or images."""

    def sample_prompts(self, subset: str, n: int, seed: int) -> list[str]:
        """``n`` prompts of ``subset``, the same for the same seed."""


def judgments(truth: GroundTruth | None, images: Any, prompts: list[str]) -> list[dict] | None:
    """The truth's judgments of ``images`` (None without a truth, or where it cannot judge)."""
    return None if truth is None else truth.judge(images, prompts)


def gold_verdicts(truth: GroundTruth | None, images: Any, prompts: list[str]) -> np.ndarray | None:
    """1.0 (aligned) or 0.0 per image (None where :func:`judgments` is None)."""
    judged = judgments(truth, images, prompts)
    return None if judged is None else np.array([float(j["aligned"]) for j in judged])


def subset_prompts(truth: GroundTruth | None, subset: str, n: int, seed: int, key: str = "prompts.subsets"
                   ) -> list[str]:
    """Prompts of a named subset, from the ground truth (one clear error without one)."""
    if truth is None:
        raise InputError(f"{key}: prompts of a subset come from a ground truth (the embedded world's), and this "
                         "run has none; list the prompts instead (prompts.list)")
    return truth.sample_prompts(subset, n, seed)
