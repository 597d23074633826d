"""``shapes-detect``: a differentiable near-gold reward -- a small network that predicts the oracle's parse.

The network reads an image and predicts what the oracle (:func:`textnorm_t2i.world.oracle.detect`) would
find in it: for each of the world's colour x shape *kinds*, and for "unknown" blobs the oracle cannot name,
a distribution over the count (0, 1, 2, 3, 4, "5 or more"); and for each kind where a single object of it
stands (a mean position and its uncertainty). The reward of a prompt is

    r(x, y) = log P(the parse of x satisfies y)

with the kinds read as independent: each clause of y gets the probability that its kinds' counts add up
to the stated count, every kind no clause mentions (and "unknown") the probability of a count of zero, and
a relation the probability that the subject's position lies on the stated side of the object's
(a Gaussian on the difference of the two predicted positions). Each factor is floored at ``eps`` so that a
hopeless prompt scores ``log(eps)`` per failed factor rather than minus infinity. Prompts are read with
the world grammar; prompts beyond it (the rules' contrastive prompts: hybrids, counts up to twelve) are
read leniently as the perceive presets read them (:func:`textnorm_t2i.rewards.perceive.read_prompt`).

It is trained (``textnorm train reward --config configs/reward-detect.yaml``, :mod:`train_detect`) on
renders and on the embedded generator's own images, labelled by the oracle. It is strong on images like
those (see docs/diagnosis.md) and, being a network of pixels, a generator can still fool it with
images no renderer or generator would make: that is what it is for -- a proxy to study over-optimisation
on, whose gradient is informative.

Example:
    >>> from textnorm_t2i.world.grammar import parse
    >>> probs = torch.zeros(1, N_KINDS, N_COUNTS); probs[..., 0] = 1.0   # surely nothing anywhere ...
    >>> probs[0, kind_index("red", "circle")] = torch.tensor([0.0, 0.0, 1.0, 0, 0, 0])  # ... but 2 red circles
    >>> pos, sigma = torch.full((1, len(KINDS), 2), 0.5), torch.ones(1, len(KINDS))
    >>> [round(float(spec_log_prob(parse(p), probs.log(), pos, sigma)[0]), 3)
    ...  for p in ("two red circles", "two circles", "a red circle")]
    [0.0, 0.0, -9.21]
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from textnorm_t2i.errors import InputError
from textnorm_t2i.rewards.base import Images, Reward, _take, to_tensor
from textnorm_t2i.rewards.folder import read_model_folder, write_model_folder
from textnorm_t2i.rewards.perceive import read_prompt
from textnorm_t2i.world.vocab import COLORS, SHAPES

KINDS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
UNKNOWN = len(KINDS)          # the index of "objects the oracle cannot name" (unknown colour or shape)
N_KINDS = len(KINDS) + 1
MAX_COUNT = 5                 # the last count class means "five or more"
N_COUNTS = MAX_COUNT + 1
DEFAULT_EPS = 1e-4


def kind_index(color: str, shape: str) -> int:
    """The kind of an object as the oracle names it (``UNKNOWN`` for anything outside the world).

    Example:
        >>> kind_index("red", "circle"), kind_index("unknown", "circle") == UNKNOWN
        (0, True)
    """
    try:
        return KINDS.index((color, shape))
    except ValueError:
        return UNKNOWN


class ParseNet(nn.Module):
    """A CNN that keeps where things are (no global pooling) and predicts the oracle's parse.

    Returns count logits ``B x N_KINDS x N_COUNTS``, positions ``B x len(KINDS) x 2`` in [0, 1] (x, y as
    fractions of the canvas) and their standard deviations ``B x len(KINDS)``.

    Example:
        >>> net = ParseNet({"widths": [8, 8, 8], "hidden": 16})
        >>> [tuple(t.shape) for t in net(torch.rand(2, 3, 32, 32))]
        [(2, 13, 6), (2, 12, 2), (2, 12)]
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        widths = list(config.get("widths", [32, 64, 128]))
        hidden = int(config.get("hidden", 256))
        size = int(config.get("image_size", 32))
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:  # each stage: a 3x3 conv at full resolution, then a stride-2 one
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.GroupNorm(4, w), nn.GELU(),
                       nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GroupNorm(4, w), nn.GELU()]
            c_in = w
            size = (size + 1) // 2
        self.body = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(c_in * size * size, hidden), nn.GELU())
        self.counts = nn.Linear(hidden, N_KINDS * N_COUNTS)
        self.places = nn.Linear(hidden, len(KINDS) * 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.neck(self.body(x * 2 - 1))
        logits = self.counts(h).reshape(-1, N_KINDS, N_COUNTS)
        places = self.places(h).reshape(-1, len(KINDS), 3)
        return logits, torch.sigmoid(places[..., :2]), F.softplus(places[..., 2]) + 0.01


def _count_class(count: int) -> int:
    return min(count, MAX_COUNT)


def _sum_counts(probs: list[torch.Tensor]) -> torch.Tensor:
    """The distribution of the sum of independent counts (``B x N_COUNTS`` each), capped at "five or more"."""
    total = probs[0]
    for p in probs[1:]:
        below = [sum(total[:, i] * p[:, n - i] for i in range(n + 1)) for n in range(MAX_COUNT)]
        exact = torch.stack(below, dim=1)
        total = torch.cat([exact, (1 - exact.sum(dim=1, keepdim=True)).clamp_min(0)], dim=1)
    return total


def _floored_log(p: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.log(eps + (1 - eps) * p.clamp(0, 1))


@lru_cache(maxsize=65536)
def read_spec(prompt: str) -> Any:
    """The world spec of a prompt, read as the perceive presets read it (lenient beyond the grammar)."""
    return read_prompt(prompt)


def _clause_kinds(clause: Any) -> list[int]:
    if clause.shape not in SHAPES:  # a hybrid the lenient reader keeps ("circle-like squares"): no kind is one
        return []
    return [i for i, (c, s) in enumerate(KINDS) if s == clause.shape and (clause.color in (None, c))]


def spec_log_prob(spec: Any, log_probs: torch.Tensor, pos: torch.Tensor, sigma: torch.Tensor,
                  eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``log P(parse satisfies spec)`` for a batch of predicted parses (see the module docstring).

    ``log_probs`` is ``B x N_KINDS x N_COUNTS`` (log-softmax over counts), ``pos`` ``B x len(KINDS) x 2``,
    ``sigma`` ``B x len(KINDS)``; returns ``B`` values.
    """
    probs = log_probs.exp()
    total = torch.zeros(probs.shape[0], dtype=probs.dtype, device=probs.device)
    mentioned: set[int] = set()
    where = []
    for clause in spec.clauses:
        kinds = _clause_kinds(clause)
        mentioned.update(kinds)
        if not kinds:
            total = total + math.log(eps)
            where.append(None)
            continue
        dist = _sum_counts([probs[:, k] for k in kinds])
        total = total + _floored_log(dist[:, _count_class(clause.count)], eps)
        # Where the clause's object stands: its kinds' positions, weighted by how likely each holds one object.
        weight = probs[:, kinds, 1] + 1e-6
        weight = weight / weight.sum(dim=1, keepdim=True)
        where.append(((weight[..., None] * pos[:, kinds]).sum(dim=1),
                      (weight * sigma[:, kinds]).sum(dim=1)))
    others = [k for k in range(N_KINDS) if k not in mentioned]
    total = total + _floored_log(probs[:, others, 0], eps).sum(dim=1)
    if spec.relation is not None:
        a, b = where[spec.relation.subject], where[spec.relation.object]
        if a is None or b is None:
            total = total + math.log(eps)
        else:
            (pa, sa), (pb, sb) = a, b
            axis, sign = {"left": (0, 1.0), "right": (0, -1.0), "above": (1, 1.0), "below": (1, -1.0)}[
                spec.relation.kind]
            gap = sign * (pb[:, axis] - pa[:, axis]) / torch.sqrt(sa**2 + sb**2)
            total = total + _floored_log(0.5 * (1 + torch.erf(gap / math.sqrt(2))), eps)
    return total


class DetectReward(Reward):
    """``log P(the predicted parse satisfies the prompt)`` of a :class:`ParseNet`; differentiable in the pixels.

    Example:
        >>> r = DetectReward(ParseNet({"widths": [8, 8, 8], "hidden": 16}))
        >>> r(torch.rand(2, 3, 32, 32), ["two red circles", "a blue square above a red circle"]).shape
        torch.Size([2])
    """

    differentiable = True

    def __init__(self, model: ParseNet, name: str = "shapes-detect", eps: float = DEFAULT_EPS,
                 flip_average: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise InputError(f"eps must be a number in (0, 1), got {eps!r}")
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.name, self.eps, self.flip_average = name, float(eps), bool(flip_average)
        self.image_size = int(model.config.get("image_size", 32))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> DetectReward:
        config, state = read_model_folder(path)
        model = ParseNet(config)
        model.load_state_dict(state)
        return cls(model, name=config.get("name", Path(path).name), **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        write_model_folder(path, self.model, self.name)

    def parse_images(self, images: Images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted parses: count log-probabilities, positions and their standard deviations."""
        parts = []
        for lo in range(0, len(images), self.batch_size):
            x = to_tensor(_take(images, slice(lo, lo + self.batch_size)), self.image_size)
            x = x.to(self.device, self.dtype)
            logits, pos, sigma = self.model(x)
            if self.flip_average:  # the mirror image, read back: every world shape is left-right symmetric
                m_logits, m_pos, m_sigma = self.model(x.flip(-1))
                probs = (F.softmax(logits.float(), -1) + F.softmax(m_logits.float(), -1)) / 2
                m_pos = torch.stack([1 - m_pos[..., 0], m_pos[..., 1]], dim=-1)
                parts.append((probs.log(), (pos.float() + m_pos.float()) / 2, (sigma.float() + m_sigma.float()) / 2))
            else:
                parts.append((F.log_softmax(logits.float(), dim=-1), pos.float(), sigma.float()))
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        return torch.cat(self._score_sets(images, [[p] for p in prompts], grad))

    def _score_sets(self, images: Images, prompt_sets: list[list[str]], grad: bool) -> list[torch.Tensor]:
        if not len(images):
            return []
        log_probs, pos, sigma = self.parse_images(images)
        # One vectorised evaluation per distinct prompt, over the images whose set holds it.
        rows: dict[str, list[tuple[int, int]]] = {}
        for i, ps in enumerate(prompt_sets):
            for j, p in enumerate(ps):
                rows.setdefault(p, []).append((i, j))
        values: dict[tuple[int, int], torch.Tensor] = {}
        for prompt, where in rows.items():
            index = torch.tensor([i for i, _ in where], device=log_probs.device)
            scores = spec_log_prob(read_spec(prompt), log_probs[index], pos[index], sigma[index], self.eps)
            values.update(zip(where, scores))
        return [torch.stack([values[(i, j)] for j in range(len(ps))]) if ps else log_probs.new_zeros(0)
                for i, ps in enumerate(prompt_sets)]


def build_detect(path: str, **kw: Any) -> DetectReward:
    """``shapes-detect`` from its folder (``config.json`` + ``model.safetensors``)."""
    return DetectReward.from_pretrained(path, **kw)
