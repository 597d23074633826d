"""Building reward models by name: ``load_reward("clip", "/models/clip-vit-l-14")``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textnorm.errors import InputError
from textnorm.rewards.base import Reward


@dataclass(frozen=True)
class RewardEntry:
    name: str
    description: str
    default_path: str | None
    build: Callable[..., Reward]


_REGISTRY: dict[str, RewardEntry] = {}


def register_reward(name: str, description: str, default_path: str | None = None):
    """Decorator registering a builder ``build(path_or_id, **kw) -> Reward`` under ``name``.

    Example:
        >>> @register_reward("doc-constant", "always 0")
        ... def _build(path_or_id=None, **kw):
        ...     from textnorm.rewards.base import CallableReward
        ...     return CallableReward(lambda images, prompts: [0.0] * len(prompts), name="doc-constant")
        >>> load_reward("doc-constant").name
        'doc-constant'
    """

    def wrap(fn: Callable[..., Reward]) -> Callable[..., Reward]:
        _REGISTRY[name] = RewardEntry(name, description, default_path, fn)
        return fn

    return wrap


def _ensure_builtins() -> None:
    # Imported here so that the registry fills itself without import cycles.
    import textnorm.rewards.builtin  # noqa: F401


def list_rewards() -> list[RewardEntry]:
    """Every registered reward, sorted by name.

    Example:
        >>> {"clip", "pickscore", "blip2"} <= {e.name for e in list_rewards()}
        True
    """
    _ensure_builtins()
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def load_reward(name: str, path_or_id: str | None = None, **kwargs: Any) -> Reward:
    """Build a registered reward; ``path_or_id`` defaults to the reward's usual hub id.

    Example:
        >>> load_reward("nope")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm.errors.InputError: unknown reward 'nope' (registered: ...)
    """
    _ensure_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown reward {name!r} (registered: {', '.join(sorted(_REGISTRY))})")
    entry = _REGISTRY[name]
    return entry.build(path_or_id or entry.default_path, **kwargs)
