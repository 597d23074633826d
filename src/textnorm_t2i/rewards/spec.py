"""What a reward is, as data: the ``reward:`` section of every config and of the CLI's reward options.

A :class:`RewardSpec` names one reward (or several, for an ensemble), their weights, whether each is
normalised by TextNorm over contrastive prompts (and from which prompt sets, at which temperature and
scaling), and how an ensemble combines its members. :func:`textnorm_t2i.objectives.factory.build_reward`
turns it into a reward; nothing else builds rewards from names.

Example:
    >>> from textnorm_t2i.config import from_dict
    >>> spec = from_dict(RewardSpec, {"name": ["shapes-clip-a", "shapes-clip-b"], "textnorm": True})
    >>> spec.names, spec.ensemble.mode
    (['shapes-clip-a', 'shapes-clip-b'], 'mean')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from textnorm_t2i.config import Config, from_dict, option
from textnorm_t2i.errors import InputError


def parse_reward_spec(spec: str) -> tuple[str, str | None]:
    """``"clip=/models/clip"`` -> ``("clip", "/models/clip")``; ``"clip"`` -> ``("clip", None)``.

    Example:
        >>> parse_reward_spec("pickscore=/m/ps")
        ('pickscore', '/m/ps')
    """
    name, _, path = spec.partition("=")
    if not name:
        raise InputError(f"bad reward spec {spec!r}: expected NAME or NAME=PATH")
    return name, path or None


def parse_key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """``["batch_size=8", "head=itc", "allow_pickle=true"]`` -> typed keyword arguments.

    Example:
        >>> parse_key_values(["batch_size=8", "head=itc", "allow_pickle=true"])
        {'batch_size': 8, 'head': 'itc', 'allow_pickle': True}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"bad argument {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@dataclass
class EnsembleSpec(Config):
    """How the members of an ensemble combine."""

    mode: Literal["mean", "ur", "min"] = option("mean", "mean, ur (mean - lam x spread) or min of the members")
    lam: float = option(0.5, "UR ensemble: weight of the spread across members", min=0)
    spread: Literal["std", "var"] = option("std", "UR ensemble: population std or variance across members")


@dataclass
class RewardSpec(Config):
    """One reward, or an ensemble of several, optionally TextNorm-normalised."""

    name: str | list[str] = option("shapes-clip-a", "a registered reward (textnorm rewards list), or a list of "
                                   "them for an ensemble")
    path: str | list[str | None] | None = option(None, "local folder or hub id of the weights (one per name); "
                                                 "default: the reward's usual weights")
    textnorm: bool = option(False, "normalise each member by TextNorm over contrastive prompts")
    prompt_sets: str = option("rules", "contrastive sets: rules, tia2, tia2:<subset>, or a JSON file "
                              "{prompt: [contrastive prompts]}")
    temperature: float = option(1.0, "TextNorm softmax temperature", min=0, min_exclusive=True)
    scaling: Literal["none", "minmax"] = option("none", "minmax: scale each set's rewards to [0, 1] first "
                                                "(the authors' released variant)")
    colors: list[str] | None = option(None, "colour words the rules swap (default: the reward's own vocabulary)")
    args: dict[str, bool | int | float | str] = option({}, "extra keyword arguments for the reward's loader, "
                                                       "e.g. {batch_size: 64, head: itc}")
    ensemble: EnsembleSpec = option(EnsembleSpec(), "how several rewards combine")

    @property
    def names(self) -> list[str]:
        return list(self.name) if isinstance(self.name, list) else [self.name]

    @property
    def paths(self) -> list[str | None]:
        if self.path is None:
            return [None] * len(self.names)
        return list(self.path) if isinstance(self.path, list) else [self.path]

    @classmethod
    def from_cli(cls, specs: str | Sequence[str], reward_args: Sequence[str] | None = None, textnorm: bool = False,
                 prompt_sets: str | None = None, temperature: float = 1.0, scaling: str = "none",
                 ensemble: str = "mean", lam: float = 0.5, where: str = "--reward") -> RewardSpec:
        """The spec of the CLI's reward options: ``NAME[=PATH]`` each, ``KEY=VALUE`` loader arguments.

        Example:
            >>> RewardSpec.from_cli("shapes-clip-a=/m/a", ["batch_size=8"]).args
            {'batch_size': 8}
            >>> RewardSpec.from_cli("nope")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            textnorm_t2i.errors.InputError: --reward: unknown reward 'nope' (registered: ...)
        """
        pairs = [parse_reward_spec(s) for s in ([specs] if isinstance(specs, str) else specs)]
        data = {"name": [n for n, _ in pairs] if len(pairs) > 1 else pairs[0][0],
                "path": [p for _, p in pairs] if len(pairs) > 1 else pairs[0][1],
                "textnorm": textnorm, "prompt_sets": prompt_sets or "rules", "temperature": temperature,
                "scaling": scaling, "args": parse_key_values(reward_args),
                "ensemble": {"mode": ensemble, "lam": lam}}
        return from_dict(cls, data, where)

    def check(self) -> None:
        if not self.names or any(not n for n in self.names):
            raise InputError("reward.name: give a reward name (or a non-empty list of them)")
        from textnorm_t2i.rewards.registry import reward_entry

        for n in self.names:
            reward_entry(n)  # an unknown name fails here, before any model loads
        if len(self.paths) != len(self.names):
            raise InputError(f"reward.path: {len(self.paths)} path(s) for {len(self.names)} reward name(s)")
        sets = self.prompt_sets
        if self.textnorm and sets != "rules" and sets != "tia2" and not sets.startswith("tia2:"):
            from pathlib import Path

            if not Path(sets).is_file():
                raise InputError(f"reward.prompt_sets: {sets}: no such file (give rules, tia2, tia2:<subset> "
                                 "or a JSON file)")
        if self.colors is not None and not self.colors:
            raise InputError("reward.colors: give at least one colour word, or leave it out")
