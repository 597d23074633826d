"""Checking a list of objects against a spec: exactly the described objects, nothing else.

Shared by the oracle (objects detected in pixels) and by the symbolic ground truth (objects the
renderer placed), so that both apply one definition of "aligned".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textnorm_t2i.world.grammar import Clause, Spec
from textnorm_t2i.world.vocab import RELATION_PHRASE


@dataclass(frozen=True)
class Obj:
    """An object as the checker sees it; ``shape``/``color`` may be ``"unknown"``."""

    shape: str
    color: str
    center: tuple[float, float]

    def describe(self) -> str:
        if self.shape == "unknown" or self.color == "unknown":
            return f"an unrecognised {self.color if self.color != 'unknown' else ''} blob".replace("  ", " ")
        return f"a {self.color} {self.shape}"


def _matches(clause: Clause, obj: Obj) -> bool:
    return obj.shape == clause.shape and (clause.color is None or obj.color == clause.color)


def _assign(clauses: Sequence[Clause], objs: Sequence[Obj]) -> list[list[int]] | None:
    """Objects for each clause (exact counts, every object used once), or None."""
    order = sorted(range(len(clauses)), key=lambda i: clauses[i].color is None)  # specific clauses first
    used = [False] * len(objs)
    chosen: dict[int, list[int]] = {}

    def pick(k: int, ci: int, start: int, acc: list[int]) -> bool:
        clause = clauses[ci]
        if len(acc) == clause.count:
            chosen[ci] = list(acc)
            return solve(k + 1)
        for j in range(start, len(objs)):
            if not used[j] and _matches(clause, objs[j]):
                used[j] = True
                acc.append(j)
                if pick(k, ci, j + 1, acc):
                    return True
                acc.pop()
                used[j] = False
        return False

    def solve(k: int) -> bool:
        if k == len(order):
            return all(used)
        return pick(k, order[k], 0, [])

    return [chosen[i] for i in range(len(clauses))] if solve(0) else None


def _relation_holds(kind: str, a: Obj, b: Obj) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[kind]


def _actual_relation(a: Obj, b: Obj) -> str:
    (ax, ay), (bx, by) = a.center, b.center
    dx, dy = bx - ax, by - ay
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


def check(spec: Spec, objs: Sequence[Obj]) -> tuple[bool, list[str]]:
    """Whether ``objs`` are exactly what ``spec`` describes, with human-readable reasons.

    Example:
        >>> from textnorm_t2i.world.grammar import parse
        >>> check(parse("three red circles"), [Obj("circle", "red", (5, 5)), Obj("circle", "red", (20, 5))])
        (False, ['expected 3 red circles, found 2'])
    """
    reasons = []
    for clause in spec.clauses:
        found = sum(_matches(clause, o) for o in objs)
        if found != clause.count:
            reasons.append(f"expected {clause.count} {clause.describe()}, found {found}")
    extras = [o for o in objs if not any(_matches(c, o) for c in spec.clauses)]
    reasons += [f"unexpected {o.describe()} at ({o.center[0]:.0f}, {o.center[1]:.0f})" for o in extras]
    if reasons:
        return False, reasons
    assignment = _assign(spec.clauses, objs)
    if assignment is None:
        return False, [f"the {len(objs)} objects cannot be matched one to one to the description"]
    if spec.relation is not None:
        rel = spec.relation
        a, b = objs[assignment[rel.subject][0]], objs[assignment[rel.object][0]]
        if not _relation_holds(rel.kind, a, b):
            ca, cb = spec.clauses[rel.subject].describe(), spec.clauses[rel.object].describe()
            return False, [f"expected the {ca} {RELATION_PHRASE[rel.kind]} the {cb}, but it is "
                           f"{RELATION_PHRASE[_actual_relation(a, b)]} it"]
    return True, ["matches the prompt"]
