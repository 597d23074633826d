"""TextNorm: a reward made confidence-aware by normalising it over semantically contrastive prompts.

For image x, prompt y and contrastive set C(y):

    r_TN(x, y) = exp(r(x, y) / T) / sum_{y' in {y} + C(y)} exp(r(x, y') / T)

With ``scaling="minmax"`` the set's rewards are first min-max scaled to [0, 1] (the authors'
released variant).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.rewards.base import Images, Reward, as_reward

SCALINGS = ("none", "minmax")


def pad_sets(set_rewards: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rewards of sets of different sizes into ``(values N x K, valid mask N x K)``.

    Example:
        >>> v, m = pad_sets([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
        >>> m.tolist()
        [[True, True], [True, False]]
    """
    k = max((len(r) for r in set_rewards), default=1)
    dtype = set_rewards[0].dtype if len(set_rewards) and set_rewards[0].is_floating_point() else torch.float32
    values = torch.zeros(len(set_rewards), k, dtype=dtype)
    mask = torch.zeros(len(set_rewards), k, dtype=torch.bool)
    for i, r in enumerate(set_rewards):
        values[i, : len(r)] = r
        mask[i, : len(r)] = True
    return values, mask


def normalize_sets(values: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
                   scaling: str = "none") -> torch.Tensor:
    """TextNorm score of column 0 (the original prompt) of each row of padded set rewards.

    Example:
        >>> v, m = pad_sets([torch.tensor([2.0, 0.0])])
        >>> normalize_sets(v, m, temperature=1.0)
        tensor([0.8808])
    """
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if scaling not in SCALINGS:
        raise InputError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if scaling == "minmax":
        lo = values.masked_fill(~mask, float("inf")).min(dim=1, keepdim=True).values
        hi = values.masked_fill(~mask, float("-inf")).max(dim=1, keepdim=True).values
        span = hi - lo
        # A set with equal rewards carries no information: every prompt gets the same scaled value.
        values = torch.where(span > 0, (values - lo) / span.clamp_min(1e-30), torch.zeros_like(values))
    logits = values / temperature
    if not bool(torch.isfinite(logits[mask]).all()):
        raise InputError(f"TextNorm: temperature {temperature:g} is too small for rewards of this size (the "
                         "softmax overflows); use a larger one")
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)[:, 0]


class TextNorm(Reward):
    """A reward normalised over ``{prompt} + contrastive set`` by a softmax at ``temperature``.

    Args:
        reward: the base reward (any :class:`~textnorm_t2i.rewards.Reward` or callable).
        prompt_sets: ``{prompt: [contrastive prompts]}``.
        temperature: softmax temperature T > 0.
        scaling: ``"none"`` or ``"minmax"``.
        generator: ``fn(prompt) -> [contrastive prompts]`` for prompts without a set (e.g.
            :func:`textnorm_t2i.prompts.rules.rule_set`); without one such a prompt is an error.

    Example:
        >>> base = lambda images, prompts: [float(len(p)) for p in prompts]
        >>> tn = TextNorm(base, {"ab": ["a", "abc"]}, temperature=1.0)
        >>> round(float(tn.score(torch.zeros(1, 3, 4, 4), ["ab"])[0]), 4)
        0.2447
    """

    def __init__(self, reward: Reward | Callable, prompt_sets: Mapping[str, Sequence[str]] | None = None,
                 temperature: float = 1.0, scaling: str = "none",
                 generator: Callable[[str], Sequence[str]] | None = None, name: str | None = None):
        self.reward = as_reward(reward)
        super().__init__(device=self.reward.device, dtype=self.reward.dtype, batch_size=self.reward.batch_size)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise InputError(f"TextNorm: temperature must be a finite number > 0, got {temperature!r}")
        if scaling not in SCALINGS:
            raise InputError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        for p, s in (prompt_sets or {}).items():  # a bare string would be read as a set of characters
            if isinstance(s, str) or not all(isinstance(q, str) for q in s):
                raise InputError(f"TextNorm: the contrastive set of {p!r} must be a list of prompts, got {s!r:.80}")
        self.prompt_sets = {p: list(s) for p, s in (prompt_sets or {}).items()}
        self.temperature = float(temperature)
        self.scaling = scaling
        self.generator = generator
        self.name = name or f"textnorm({self.reward.name})"
        self._candidates: dict[str, list[str]] = {}

    @property
    def differentiable(self) -> bool | None:  # type: ignore[override]
        """Differentiable when the base reward is (the softmax is)."""
        return self.reward.differentiable

    def candidates(self, prompt: str) -> list[str]:
        """``[prompt] + contrastive set``, with duplicates (and copies of the prompt) removed."""
        if prompt not in self._candidates:
            if prompt in self.prompt_sets:
                contrast = self.prompt_sets[prompt]
            elif self.generator is not None:
                given = self.generator(prompt)
                if isinstance(given, str) or not isinstance(given, (list, tuple)) or \
                        not all(isinstance(q, str) for q in given):
                    raise InputError(f"TextNorm: the prompt-set generator gave {type(given).__name__} for {prompt!r}; "
                                     "it must return a list of prompts")
                contrast = list(given)
            else:
                raise InputError(f"TextNorm: no contrastive prompt set for {prompt!r} (give one or a generator)")
            self._candidates[prompt] = list(dict.fromkeys([prompt, *contrast]))
        return self._candidates[prompt]

    def set_rewards(self, images: Images, prompts: Sequence[str], grad: bool = False) -> list[torch.Tensor]:
        """Base rewards of each image against its candidates (original prompt first)."""
        return self.reward.score_sets(images, [self.candidates(p) for p in prompts], grad=grad)

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        sets = self.set_rewards(images, prompts, grad=grad)
        if grad:
            # Differentiable path: one softmax per image keeps the graph simple.
            return torch.stack([normalize_sets(s[None], torch.ones(1, len(s), dtype=torch.bool),
                                               self.temperature, self.scaling)[0] for s in sets])
        values, mask = pad_sets(sets)
        return normalize_sets(values, mask, self.temperature, self.scaling)
