"""Ensembles of rewards: mean, uncertainty-regularised (mean - lam x spread) and worst case."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.rewards.base import Images, Reward, as_reward

MODES = ("mean", "ur", "min")
SPREADS = ("std", "var")


def combine(scores: torch.Tensor, mode: str = "mean", lam: float = 0.5, spread: str = "std") -> torch.Tensor:
    """Combine member scores ``M x N`` into ``N`` scores.

    The spread is the population standard deviation (or variance) across members.

    Example:
        >>> s = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
        >>> combine(s, "mean").tolist(), combine(s, "ur", lam=1.0).tolist(), combine(s, "min").tolist()
        ([2.0, 0.0], [1.0, 0.0], [1.0, 0.0])
    """
    if mode not in MODES:
        raise InputError(f"ensemble mode must be one of {MODES}, got {mode!r}")
    if spread not in SPREADS:
        raise InputError(f"ensemble spread must be one of {SPREADS}, got {spread!r}")
    if mode == "min":
        return scores.min(dim=0).values
    mean = scores.mean(dim=0)
    if mode == "mean":
        return mean
    var = scores.var(dim=0, unbiased=False)
    if spread == "var":
        return mean - lam * var
    # sqrt has an infinite derivative at 0 (members that agree exactly): there the spread's gradient is taken
    # as 0, so reward-gradient fine-tuning gets a finite gradient; the values are the same.
    std = torch.where(var > 0, var.clamp_min(torch.finfo(var.dtype).tiny).sqrt(), torch.zeros_like(var))
    return mean - lam * std


class Ensemble(Reward):
    """A reward combining several rewards (plain or TextNorm) on the same pairs.

    Example:
        >>> a = lambda images, prompts: [1.0] * len(prompts)
        >>> b = lambda images, prompts: [3.0] * len(prompts)
        >>> Ensemble([a, b], mode="ur", lam=1.0).score(torch.zeros(1, 3, 4, 4), ["x"])
        tensor([1.])
    """

    def __init__(self, members: Sequence[Reward | Callable], mode: str = "mean", lam: float = 0.5,
                 spread: str = "std", name: str | None = None):
        if not members:
            raise InputError("an Ensemble needs at least one member")
        if mode not in MODES:
            raise InputError(f"ensemble mode must be one of {MODES}, got {mode!r}")
        if spread not in SPREADS:
            raise InputError(f"ensemble spread must be one of {SPREADS}, got {spread!r}")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not -float("inf") < lam < float("inf"):
            raise InputError(f"ensemble lambda must be a finite number, got {lam!r}")
        self.members = [as_reward(m) for m in members]
        super().__init__(device=self.members[0].device, batch_size=self.members[0].batch_size)
        self.mode, self.lam, self.spread = mode, float(lam), spread
        self.name = name or f"{mode}({', '.join(m.name for m in self.members)})"

    @property
    def differentiable(self) -> bool | None:  # type: ignore[override]
        """Differentiable when every member is (False if one is not; None if one is unknown)."""
        flags = [m.differentiable for m in self.members]
        return False if False in flags else (None if None in flags else True)

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        scores = torch.stack([m.score(images, prompts, grad=grad).to(torch.float32) for m in self.members])
        return combine(scores, self.mode, self.lam, self.spread)
