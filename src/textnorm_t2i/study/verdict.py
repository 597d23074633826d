"""The study's one rule for "is A different from B": their 95% confidence intervals do not overlap.

The HTML report and the markdown summary (docs/study.md) both decide "higher", "lower" or "no clear difference"
by this rule (each in its own words), so they can never disagree. It is conservative (two intervals can overlap a
little while a paired test would find a difference); where the study has paired data it reports the paired
difference beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """+1 when ``b`` is higher than ``a``, -1 when lower, 0 when their intervals overlap.

    ``a`` and ``b`` are ``{"mean": m, "ci": [lo, hi]}``.

    Example:
        >>> compare({"mean": 0.2, "ci": [0.1, 0.3]}, {"mean": 0.5, "ci": [0.4, 0.6]})
        1
        >>> compare({"mean": 0.2, "ci": [0.1, 0.3]}, {"mean": 0.3, "ci": [0.25, 0.35]})
        0
    """
    if b["ci"][0] > a["ci"][1]:
        return 1
    if b["ci"][1] < a["ci"][0]:
        return -1
    return 0


def verdict(a: Mapping[str, Any], b: Mapping[str, Any], higher: str = "higher", lower: str = "lower",
            same: str = "no clear difference") -> str:
    """:func:`compare` in words (``b`` relative to ``a``).

    Example:
        >>> verdict({"mean": 0.2, "ci": [0.1, 0.3]}, {"mean": 0.05, "ci": [0.0, 0.09]}, "TextNorm higher",
        ...         "TextNorm lower")
        'TextNorm lower'
    """
    return {1: higher, -1: lower, 0: same}[compare(a, b)]
