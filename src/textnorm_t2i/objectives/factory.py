"""The one reward factory: a :class:`~textnorm_t2i.rewards.spec.RewardSpec` in, a reward out.

The CLI (``score``, ``tia2 score``, ``calibrate``), fine-tuning, the misalignment table and the study all
build rewards here, so the same spec gives the same reward everywhere -- in particular the same
contrastive prompt sets, from one rule vocabulary per reward (see :mod:`textnorm_t2i.rewards.registry`).

Example:
    >>> from textnorm_t2i.rewards.spec import RewardSpec
    >>> reward = build_reward(RewardSpec(name="shapes-clip-a", textnorm=True, temperature=0.5))
    >>> reward.name, reward.candidates("two red circles")[:3]
    ('textnorm(shapes-clip-a)', ['two red circles', 'a red circle', 'three red circles'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Literal

from textnorm_t2i.calibrate.ensemble import Ensemble
from textnorm_t2i.calibrate.textnorm import TextNorm
from textnorm_t2i.config import from_dict
from textnorm_t2i.errors import InputError
from textnorm_t2i.prompts.files import load_prompt_sets
from textnorm_t2i.prompts.rules import COLORS as OPEN_COLORS
from textnorm_t2i.prompts.rules import rule_set
from textnorm_t2i.rewards.base import Reward
from textnorm_t2i.rewards.registry import load_reward, reward_entry
from textnorm_t2i.rewards.spec import RewardSpec, parse_reward_spec
from textnorm_t2i.world.vocab import COLORS as WORLD_COLORS


def rule_vocabulary(spec: RewardSpec) -> tuple[str, ...]:
    """The colour words the rules swap for this spec: ``spec.colors``, else the first reward's vocabulary.

    Example:
        >>> rule_vocabulary(RewardSpec(name="shapes-clip-a"))
        ('red', 'green', 'blue', 'yellow')
    """
    if spec.colors:
        return tuple(spec.colors)
    return vocabulary_colors(reward_entry(spec.names[0]).vocabulary)


def vocabulary_colors(vocabulary: Literal["world", "open"]) -> tuple[str, ...]:
    """The colour words of a declared vocabulary: the world's four, or the open rules' list.

    Example:
        >>> vocabulary_colors("world")
        ('red', 'green', 'blue', 'yellow')
    """
    return tuple(WORLD_COLORS) if vocabulary == "world" else OPEN_COLORS


def normalise_by_rules(reward: Reward, temperature: float, vocabulary: Literal["world", "open"]) -> Reward:
    """TextNorm of a reward built outside the registry, over rule sets in the ``vocabulary`` it declares."""
    return TextNorm(reward, {}, temperature, "none", generator=partial(rule_set, colors=vocabulary_colors(vocabulary)))


def contrastive_sets(spec: RewardSpec) -> tuple[dict[str, list[str]], Callable[[str], list[str]] | None]:
    """``(fixed sets, generator)`` for the spec's ``prompt_sets``: rules give a generator, files fixed sets."""
    if spec.prompt_sets == "rules":
        return {}, partial(rule_set, colors=rule_vocabulary(spec))
    return load_prompt_sets(spec.prompt_sets), None


def member_specs(spec: RewardSpec) -> list[RewardSpec]:
    """One single-reward spec per member of ``spec`` (each to be TextNorm-normalised on its own).

    Example:
        >>> [s.name for s in member_specs(RewardSpec(name=["shapes-clip-a", "shapes-clip-b"]))]
        ['shapes-clip-a', 'shapes-clip-b']
    """
    return [replace(spec, name=n, path=p) for n, p in zip(spec.names, spec.paths)]


def load_members(spec: RewardSpec) -> list[Reward]:
    """The spec's reward models, raw (one per name)."""
    return [load_reward(n, p, **spec.args) for n, p in zip(spec.names, spec.paths)]


def normalise(reward: Reward, spec: RewardSpec, sets: Mapping[str, Sequence[str]] | None = None,
              generator: Callable[[str], list[str]] | None = None) -> Reward:
    """TextNorm of ``reward`` with the spec's temperature and scaling, over fixed ``sets`` and/or a
    ``generator``; with neither, the spec's own prompt sets."""
    if sets is None and generator is None:
        sets, generator = contrastive_sets(spec)
    return TextNorm(reward, sets or {}, spec.temperature, spec.scaling, generator=generator)


def combine(members: Sequence[Reward], spec: RewardSpec, mode: str | None = None) -> Reward:
    """One member as it is; several as the spec's ensemble (or ``mode``)."""
    if len(members) == 1:
        return members[0]
    return Ensemble(list(members), mode=mode or spec.ensemble.mode, lam=spec.ensemble.lam,
                    spread=spec.ensemble.spread)


def as_spec(spec: RewardSpec | Mapping[str, Any] | str) -> RewardSpec:
    """A spec from a spec, a mapping (the YAML ``reward:`` section) or a ``NAME[=PATH]`` string."""
    if isinstance(spec, RewardSpec):
        return spec
    if isinstance(spec, str):
        name, path = parse_reward_spec(spec)
        return from_dict(RewardSpec, {"name": name, "path": path}, "reward")
    if isinstance(spec, Mapping):
        return from_dict(RewardSpec, dict(spec), "reward")
    raise InputError(f"not a reward spec: {type(spec).__name__}")


def build_reward(spec: RewardSpec | Mapping[str, Any] | str,
                 sets: Mapping[str, Sequence[str]] | None = None) -> Reward:
    """The reward a spec describes (contrastive ``sets`` override the spec's ``prompt_sets``).

    Example:
        >>> build_reward("nope")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: reward: unknown reward 'nope' (registered: ...)
    """
    spec = as_spec(spec)
    generator = None
    if spec.textnorm and sets is None:
        sets, generator = contrastive_sets(spec)  # read once, before any model loads
    members = load_members(spec)
    if spec.textnorm:
        members = [normalise(m, spec, sets, generator) for m in members]
    return combine(members, spec)


def build_views(spec: RewardSpec | Mapping[str, Any]) -> tuple[Reward, Reward, Reward]:
    """``(objective, raw, textnorm)``: the reward a spec describes, the mean of its raw members, and the
    mean of their TextNorm versions -- sharing one copy of each model (what fine-tuning logs)."""
    spec = as_spec(spec)
    sets, generator = contrastive_sets(spec)
    members = load_members(spec)
    normed = [normalise(m, spec, sets, generator) for m in members]
    objective = combine(normed if spec.textnorm else members, spec)
    return objective, combine(members, spec, "mean"), combine(normed, spec, "mean")

