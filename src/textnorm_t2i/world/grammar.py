"""Prompt grammar of the synthetic world: prompts <-> structured specs (GenEval-style include clauses).

    prompt   := [lead-in] clause [("and" clause) | (relation clause)]
    clause   := count [colour] shape        count: a/an/one/two/three/four; shape plural when count > 1
    relation := "to the left of" | "left of" | "to the right of" | "right of" | "above" | "below"

Case and trailing punctuation are ignored. A clause without a colour matches any colour.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from textnorm_t2i.errors import InputError
from textnorm_t2i.world.vocab import (
    COLORS,
    COUNT_WORDS,
    LEAD_INS,
    MAX_OBJECTS,
    NUMBER_WORD,
    OPPOSITE,
    PLURAL,
    RELATION_PHRASE,
    RELATIONS,
    SHAPES,
    SINGULAR,
)

SUBSETS = ("counting", "composition", "comprehensive")


@dataclass(frozen=True)
class Clause:
    """``count`` objects of ``shape``, of ``color`` (None = any colour).

    Example:
        >>> Clause("circle", "red", 3).phrase()
        'three red circles'
    """

    shape: str
    color: str | None
    count: int

    def phrase(self) -> str:
        noun = self.shape if self.count == 1 else PLURAL[self.shape]
        words = [NUMBER_WORD[self.count], *([self.color] if self.color else []), noun]
        if self.count == 1:
            words[0] = "an" if words[1][0] in "aeiou" else "a"
        return " ".join(words)

    def describe(self) -> str:
        """The objects without the count, for reasons: ``red circles``."""
        noun = self.shape if self.count == 1 else PLURAL[self.shape]
        return f"{self.color} {noun}" if self.color else noun


@dataclass(frozen=True)
class Relation:
    """Clause ``subject`` is ``kind`` (left/right/above/below) of clause ``object``."""

    kind: str
    subject: int = 0
    object: int = 1


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for: include clauses and an optional relation between clause 0 and 1.

    Example:
        >>> parse("A photo of two blue squares and a yellow triangle.").clauses
        (Clause(shape='square', color='blue', count=2), Clause(shape='triangle', color='yellow', count=1))
    """

    clauses: tuple[Clause, ...]
    relation: Relation | None = None
    lead_in: str = ""

    @property
    def subset(self) -> str:
        if self.relation is not None:
            return "comprehensive"
        return "counting" if len(self.clauses) == 1 else "composition"

    @property
    def n_objects(self) -> int:
        return sum(c.count for c in self.clauses)

    def to_prompt(self) -> str:
        """A canonical prompt for this spec (parse(to_prompt()) == self).

        Example:
            >>> parse("a red circle left of a blue square").to_prompt()
            'a red circle to the left of a blue square'
        """
        if self.relation is not None:
            a, b = self.clauses[self.relation.subject], self.clauses[self.relation.object]
            body = f"{a.phrase()} {RELATION_PHRASE[self.relation.kind]} {b.phrase()}"
        else:
            body = " and ".join(c.phrase() for c in self.clauses)
        return f"{self.lead_in} {body}" if self.lead_in else body


_REL_RE = re.compile(r"\s+(" + "|".join(sorted(map(re.escape, RELATIONS), key=len, reverse=True)) + r")\s+")


def _parse_clause(text: str, prompt: str) -> Clause:
    words = text.split()
    unknown = [w for w in words if w not in COUNT_WORDS and w not in COLORS and w not in SHAPES and w not in SINGULAR]
    if unknown:
        raise InputError(f"cannot parse prompt {prompt!r}: unsupported word(s) {', '.join(map(repr, unknown))}")
    if not words or words[0] not in COUNT_WORDS:
        raise InputError(f"cannot parse prompt {prompt!r}: {text!r} must start with a count word "
                         f"({', '.join(COUNT_WORDS)})")
    count = COUNT_WORDS[words[0]]
    rest = words[1:]
    color = None
    if rest and rest[0] in COLORS:
        color, rest = rest[0], rest[1:]
    if len(rest) != 1 or (rest[0] not in SHAPES and rest[0] not in SINGULAR):
        raise InputError(f"cannot parse prompt {prompt!r}: expected '[count] [colour] shape' in {text!r}")
    shape = SINGULAR.get(rest[0], rest[0])
    return Clause(shape, color, count)


@lru_cache(maxsize=4096)
def parse(prompt: str) -> Spec:
    """Parse a world prompt into a :class:`Spec`; unsupported words raise an error naming them.

    Example:
        >>> parse("three red circles").clauses[0]
        Clause(shape='circle', color='red', count=3)
        >>> parse("a purple hexagon")
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: cannot parse prompt 'a purple hexagon': unsupported word(s) 'purple', 'hexagon'
    """
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    text = " ".join(prompt.lower().replace(",", " ").split()).rstrip(".!?;: ").strip()
    lead = ""
    for li in LEAD_INS:
        if text == li or text.startswith(li + " "):
            lead, text = li, text[len(li) + 1:]
            break
    if not text:
        raise InputError(f"cannot parse prompt {prompt!r}: it describes no object")
    m = _REL_RE.search(f" {text} ")
    if m:
        a, b = text[: m.start()].strip(), text[m.end() - 1:].strip()
        clauses = (_parse_clause(a, prompt), _parse_clause(b, prompt))
        if any(c.count != 1 for c in clauses):
            raise InputError(f"cannot parse prompt {prompt!r}: relations are between single objects")
        spec = Spec(clauses, Relation(RELATIONS[m.group(1)]), lead)
    else:
        spec = Spec(tuple(_parse_clause(part, prompt) for part in text.split(" and ")), None, lead)
    if spec.n_objects > MAX_OBJECTS:
        raise InputError(f"cannot parse prompt {prompt!r}: at most {MAX_OBJECTS} objects, got {spec.n_objects}")
    return spec


def _random_clause(rng: random.Random, count: int, color_p: float) -> Clause:
    return Clause(rng.choice(SHAPES), rng.choice(list(COLORS)) if rng.random() < color_p else None, count)


def sample_spec(subset: str, rng: random.Random) -> Spec:
    """A random spec of a subset (counting, composition or comprehensive)."""
    lead = rng.choice(["", *LEAD_INS])
    if subset == "counting":
        return Spec((_random_clause(rng, rng.randint(1, 4), 0.6),), None, lead)
    if subset == "composition":
        while True:
            a = _random_clause(rng, rng.randint(1, 3), 0.7)
            b = _random_clause(rng, rng.randint(1, MAX_OBJECTS - a.count), 0.7)
            # Distinct kinds of objects, so that the prompt is unambiguous to read.
            if a.shape != b.shape or (a.color and b.color and a.color != b.color):
                return Spec((a, b), None, lead)
    if subset == "comprehensive":
        while True:
            a, b = _random_clause(rng, 1, 1.0), _random_clause(rng, 1, 1.0)
            if (a.shape, a.color) != (b.shape, b.color):
                return Spec((a, b), Relation(rng.choice(list(RELATION_PHRASE))), lead)
    raise InputError(f"unknown subset {subset!r} (expected one of {', '.join(SUBSETS)})")


def sample_prompts(subset: str, n: int, seed: int = 0) -> list[str]:
    """``n`` random prompts of a subset, each asking for a different scene (fewer if the subset has fewer).

    Example:
        >>> sample_prompts("counting", 3, seed=1)
        ['an image of three yellow squares', 'an image of three blue triangles', 'two red circles']
    """
    rng = random.Random(f"{subset}:{seed}")
    out: dict[Spec, str] = {}
    for _ in range(50 * n + 100):
        if len(out) >= n:
            break
        spec = sample_spec(subset, rng)
        out.setdefault(replace(spec, lead_in=""), spec.to_prompt())
    return list(out.values())


def near_misses(spec: Spec) -> dict[str, list[Spec]]:
    """Specs that differ in one detail: ``count`` (+-1), ``color`` swap, ``shape`` swap, ``relation`` flipped.

    Example:
        >>> [s.to_prompt() for s in near_misses(parse("two red circles"))["count"]]
        ['a red circle', 'three red circles']
    """
    out: dict[str, list[Spec]] = {"count": [], "color": [], "shape": [], "relation": []}
    for i, c in enumerate(spec.clauses):
        def with_clause(new: Clause, i: int = i) -> Spec:
            return replace(spec, clauses=spec.clauses[:i] + (new,) + spec.clauses[i + 1:])

        if spec.relation is None:
            for n in (c.count - 1, c.count + 1):
                if 1 <= n and spec.n_objects - c.count + n <= MAX_OBJECTS:
                    out["count"].append(with_clause(replace(c, count=n)))
        if c.color:
            out["color"] += [with_clause(replace(c, color=k)) for k in COLORS if k != c.color]
        out["shape"] += [with_clause(replace(c, shape=s)) for s in SHAPES if s != c.shape]
    if spec.relation is not None:
        out["relation"].append(replace(spec, relation=replace(spec.relation, kind=OPPOSITE[spec.relation.kind])))
    return out
