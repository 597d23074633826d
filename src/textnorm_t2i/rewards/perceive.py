"""``shapes-perceive``: a reward family whose structure is known by construction (no training).

    r(x, y) = log p(y | s(x)) + w * look(x)

- **Perception** s(x): the world's detector (:func:`textnorm_t2i.world.oracle.detect`) followed by seeded,
  documented noise (:class:`PerceptionNoise`). The noise is drawn once per image (seeded by the image's
  pixels and the preset's seed), so one image has one perceived scene whatever prompt it is scored with
  -- exactly as a model perceives an image once.
- **Description likelihood** log p(y | s): how likely a describer who saw s would be to write y. For
  each clause of y ("three red circles"), with k the perceived objects that match it:
  ``log(1 - eps)`` if k equals the stated count, else ``log(eps * 0.5 ** |count - k|)``; every perceived
  object no clause mentions costs ``log(delta)``; a stated relation costs ``log(1 - eps_rel)`` if it holds
  between the first matching objects and ``log(eps_rel)`` otherwise. It is largest exactly when the
  perceived scene is what the prompt describes (the oracle's strict check).
- **Look** look(x): a prompt-independent preference, the share of the canvas covered by coloured
  (chroma > 50) pixels, times 10 -- bigger and more objects look "better" to this reward, whatever
  the prompt asks. Its weight w decides how much of the reward is offset rather than contrast.

Presets (``textnorm rewards list``); every knob can also be set with ``--reward-arg`` / ``reward.args``:

============================  =====  =====  =====  ========  ==========  ===
preset                        count  color  shape  relation  miss_small  w
============================  =====  =====  =====  ========  ==========  ===
shapes-perceive-clean          0      0      0      0         0          0
shapes-perceive-noisy          0.15   0.05   0.10   0.10      0.10       1
shapes-perceive-looks          0.15   0.05   0.10   0.10      0.10       4
============================  =====  =====  =====  ========  ==========  ===

Example:
    >>> from textnorm_t2i.world.scene import render
    >>> r = PerceiveReward()
    >>> img = render("two red circles", seed=0)
    >>> scores = r([img, img], ["two red circles", "three red circles"])
    >>> bool(scores[0] > scores[1])
    True
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.grid import to_uint8
from textnorm_t2i.rewards.base import Images, Reward, _take
from textnorm_t2i.world.grammar import Clause, Relation, Spec, parse
from textnorm_t2i.world.oracle import detect
from textnorm_t2i.world.vocab import COLORS, COUNT_WORDS, LEAD_INS, RELATIONS, SHAPES, SINGULAR

LOOK_SCALE = 10.0
CHROMA_LIT = 50.0


@dataclass(frozen=True)
class PerceptionNoise:
    """Seeded perception errors, each a probability per image (``count``, ``relation``) or per object.

    count: the perceived scene gains a copy of one object or loses one (half each).
    color: an object's colour is taken for another world colour.
    shape: an object's shape is taken for another shape.
    relation: the perceived layout is mirrored left-right or top-bottom (half each).
    miss_small: an object smaller than 70% of the median object's area is missed.
    seed: the noise stream (with the image's pixels).
    """

    count: float = 0.0
    color: float = 0.0
    shape: float = 0.0
    relation: float = 0.0
    miss_small: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "seed" and not 0.0 <= value <= 1.0:
                raise InputError(f"perception noise {name} must be in [0, 1], got {value}")


PRESETS: dict[str, dict[str, Any]] = {
    "shapes-perceive-clean": {"noise": PerceptionNoise(), "w": 0.0},
    "shapes-perceive-noisy": {"noise": PerceptionNoise(0.15, 0.05, 0.10, 0.10, 0.10), "w": 1.0},
    "shapes-perceive-looks": {"noise": PerceptionNoise(0.15, 0.05, 0.10, 0.10, 0.10), "w": 4.0},
}


@dataclass(frozen=True)
class Perceived:
    """One perceived object."""

    shape: str
    color: str
    center: tuple[float, float]


def look(image: np.ndarray) -> float:
    """The prompt-independent preference: ``LOOK_SCALE`` x the share of coloured pixels.

    Example:
        >>> look(np.zeros((32, 32, 3), dtype=np.uint8))
        0.0
    """
    arr = image.astype(np.float32)
    chroma = arr.max(axis=2) - arr.min(axis=2)
    return LOOK_SCALE * float((chroma > CHROMA_LIT).mean())


def perceive(image: np.ndarray, noise: PerceptionNoise) -> list[Perceived]:
    """The scene as this reward perceives it: detected objects, then the seeded noise of ``noise``."""
    detected = detect(image)
    objects = [Perceived(o.shape, o.color, o.center) for o in detected]
    if not any(v for k, v in asdict(noise).items() if k != "seed"):
        return objects
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little") ^ noise.seed)
    areas = [o.area for o in detected]
    if noise.miss_small and areas:
        small = 0.7 * float(np.median(areas))
        objects = [o for o, a in zip(objects, areas) if not (a < small and rng.random() < noise.miss_small)]
    colors, shapes = list(COLORS), list(SHAPES)
    out = []
    for o in objects:
        if o.color in colors and rng.random() < noise.color:
            o = replace(o, color=rng.choice([c for c in colors if c != o.color]))
        if o.shape in shapes and rng.random() < noise.shape:
            o = replace(o, shape=rng.choice([s for s in shapes if s != o.shape]))
        out.append(o)
    if out and rng.random() < noise.count:
        if rng.random() < 0.5:
            out.append(rng.choice(out))
        else:
            out.pop(rng.randrange(len(out)))
    if out and rng.random() < noise.relation:
        axis = rng.randrange(2)
        out = [replace(o, center=(-o.center[0], o.center[1]) if axis == 0 else (o.center[0], -o.center[1]))
               for o in out]
    return out


def description_log_likelihood(spec: Any, objects: list[Perceived], eps: float = 0.02, delta: float = 0.05,
                               eps_relation: float = 0.05) -> float:
    """log p(prompt | perceived scene) under the describer model of the module docstring.

    Example:
        >>> from textnorm_t2i.world.grammar import parse
        >>> objs = [Perceived("circle", "red", (5.0, 5.0)), Perceived("circle", "red", (20.0, 5.0))]
        >>> round(description_log_likelihood(parse("two red circles"), objs), 3)
        -0.02
        >>> round(description_log_likelihood(parse("three red circles"), objs), 3)
        -4.605
    """
    total = 0.0
    matched = [False] * len(objects)
    firsts = []
    for clause in spec.clauses:
        hits = [i for i, o in enumerate(objects)
                if o.shape == clause.shape and (clause.color is None or o.color == clause.color)]
        for i in hits:
            matched[i] = True
        k = len(hits)
        total += math.log(1 - eps) if k == clause.count else math.log(eps) + abs(k - clause.count) * math.log(0.5)
        firsts.append(objects[hits[0]] if hits else None)
    total += sum(not m for m in matched) * math.log(delta)
    if spec.relation is not None:
        a, b = firsts[spec.relation.subject], firsts[spec.relation.object]
        holds = a is not None and b is not None and {
            "left": a.center[0] < b.center[0], "right": a.center[0] > b.center[0],
            "above": a.center[1] < b.center[1], "below": a.center[1] > b.center[1]}[spec.relation.kind]
        total += math.log(1 - eps_relation) if holds else math.log(eps_relation)
    return total


_MORE_COUNTS = {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def read_prompt(prompt: str) -> Any:
    """A world spec for ``prompt``, read leniently: beyond the world's grammar, counts up to twelve and
    more than four objects are allowed, and hybrid nouns ("a circle-like square", contrastive prompts of
    the rules) become objects no perceived scene contains. Anything else is an :class:`InputError`.

    Example:
        >>> read_prompt("a photo of five blue circle-like squares").clauses
        (Clause(shape='blue circle-like squares', color=None, count=5),)
    """
    try:
        return parse(prompt)
    except InputError:
        pass
    text = " ".join(prompt.lower().replace(",", " ").split()).rstrip(".!?;: ").strip()
    for lead in LEAD_INS:
        if text.startswith(lead + " "):
            text = text[len(lead) + 1:]
            break
    counts = {**COUNT_WORDS, **_MORE_COUNTS}

    def clause(part: str) -> Clause:
        words = part.split()
        if not words or words[0] not in counts:
            raise InputError(f"shapes-perceive cannot read {prompt!r}: {part!r} must start with a count word")
        count, rest = counts[words[0]], words[1:]
        if any("-like" in w for w in rest):  # a hybrid ("a blue circle-like square"): no world object is one
            return Clause(" ".join(rest), None, count)
        color = rest.pop(0) if rest and rest[0] in COLORS else None
        if len(rest) != 1 or SINGULAR.get(rest[0], rest[0]) not in SHAPES:
            raise InputError(f"shapes-perceive cannot read {prompt!r}: expected '[count] [colour] shape' in {part!r}")
        return Clause(SINGULAR.get(rest[0], rest[0]), color, count)

    for phrase in sorted(RELATIONS, key=len, reverse=True):
        marker = f" {phrase} "
        if marker in f" {text} ":
            a, b = text.split(f" {phrase} ", 1)
            return Spec((clause(a), clause(b)), Relation(RELATIONS[phrase]))
    return Spec(tuple(clause(part) for part in text.split(" and ")))


class PerceiveReward(Reward):
    """``log p(y | perceived scene) + w * look(x)`` (see the module docstring). Gradient-free.

    Args:
        noise: the perception noise (default: none).
        w: weight of the look term.
        name: the reward's name.
    """

    def __init__(self, noise: PerceptionNoise | None = None, w: float = 0.0, name: str = "shapes-perceive",
                 **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise InputError(f"look weight w must be a finite number, got {w!r}")
        self.noise, self.w, self.name = noise or PerceptionNoise(), float(w), name

    def _arrays(self, images: Images) -> list[np.ndarray]:
        if isinstance(images, torch.Tensor):
            return list(to_uint8(images.detach().cpu()))
        return [np.asarray(img.convert("RGB")) for img in images]

    def _parse(self, prompts: list[str]) -> list[Any]:
        return [read_prompt(p) for p in prompts]

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        return torch.cat(self._score_sets(images, [[p] for p in prompts], grad))

    def _score_sets(self, images: Images, prompt_sets: list[list[str]], grad: bool) -> list[torch.Tensor]:
        out = []
        for lo in range(0, len(prompt_sets), self.batch_size):
            arrays = self._arrays(_take(images, slice(lo, lo + self.batch_size)))
            for arr, prompts in zip(arrays, prompt_sets[lo: lo + self.batch_size]):
                scene = perceive(arr, self.noise)  # once per image, whatever the prompts
                offset = self.w * look(arr) if self.w else 0.0
                out.append(torch.tensor([description_log_likelihood(s, scene) + offset for s in self._parse(prompts)],
                                        dtype=torch.float32))
        return out


def build_perceive(preset: str | None = None, w: float | None = None, **kwargs: Any) -> PerceiveReward:
    """A ``shapes-perceive-*`` preset; noise knobs (``count``, ``color``, ``shape``, ``relation``,
    ``miss_small``, ``seed``) and ``w`` may be overridden, e.g. ``--reward-arg w=2``."""
    name = preset or "shapes-perceive-clean"
    if name not in PRESETS:
        raise InputError(f"unknown shapes-perceive preset {name!r} ({', '.join(PRESETS)})")
    knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in PerceptionNoise.__dataclass_fields__}
    noise = replace(PRESETS[name]["noise"], **knobs)
    return PerceiveReward(noise, PRESETS[name]["w"] if w is None else w, name=name, **kwargs)
