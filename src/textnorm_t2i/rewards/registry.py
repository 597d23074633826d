"""Reward models by name: ``load_reward("clip", "/models/clip-vit-l-14")``.

The built-in rewards are declared in one literal mapping, :data:`BUILTIN_REWARDS` (as diffusers'
``auto_pipeline`` does): each entry names the function that builds it as ``"module:function"``, imported
only when that reward is loaded. Users add their own with :func:`register_reward`.

Each entry also says which **vocabulary** its rule-based contrastive prompts use: ``"world"`` rewards
(the embedded ones) contrast only the world's colours; ``"open"`` rewards the general colour list.
Every TextNorm reward built from an entry (CLI, fine-tuning, calibration, the study) uses that one
vocabulary, so the same prompt always gets the same contrastive set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal

from textnorm_t2i.errors import InputError


@dataclass(frozen=True)
class RewardEntry:
    """A named reward: what it is, its default weights, how to build it and its prompt vocabulary."""

    name: str
    description: str
    default_path: str | None
    builder: str | Callable[..., Any]      # "module:function" or a callable build(path_or_id, **kw) -> Reward
    vocabulary: Literal["world", "open"] = "open"

    def build(self, path_or_id: str | None, **kwargs: Any) -> Any:
        import inspect

        fn = self.builder
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(import_module(module), attr)
        try:
            return fn(path_or_id, **kwargs)
        except TypeError as e:  # an argument the builder (or the reward it builds) does not take: the user's typo
            if not kwargs or "keyword argument" not in str(e):
                raise
            plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            params = [p.name for p in list(inspect.signature(fn).parameters.values())[1:] if p.kind in plain]
            raise InputError(f"reward {self.name!r}: {str(e).split(': ', 1)[-1].split('() ', 1)[-1]} (its "
                             f"arguments: {', '.join(params) or 'none'})") from None


SHIPPED = "shipped:"  # default_path prefix: a model folder inside the package's data/models/

BUILTIN_REWARDS: dict[str, RewardEntry] = {
    "clip": RewardEntry("clip", "CLIPScore: 100 x cosine (transformers CLIPModel)",
                        "openai/clip-vit-large-patch14", "textnorm_t2i.rewards.clip:build_clip"),
    "pickscore": RewardEntry("pickscore", "PickScore: logit_scale.exp() x cosine (transformers CLIPModel)",
                             "yuvalkirstain/PickScore_v1", "textnorm_t2i.rewards.clip:build_pickscore"),
    "blip2": RewardEntry("blip2", "BLIP-2 ITM probability (head=itc: contrastive similarity)",
                         "Salesforce/blip2-itm-vit-g", "textnorm_t2i.rewards.blip2:build_blip2"),
    "imagereward": RewardEntry("imagereward", "ImageReward via the image-reward package (optional extra)",
                               "ImageReward-v1.0", "textnorm_t2i.rewards.external:build_imagereward"),
    "hpsv2": RewardEntry("hpsv2", "HPSv2 via the hpsv2 package (optional extra)", None,
                         "textnorm_t2i.rewards.external:build_hpsv2"),
    "shapes-clip-a": RewardEntry("shapes-clip-a",
                                 "embedded proxy: CNN + bag-of-words dual encoder, noisy captions (shipped)",
                                 SHIPPED + "shapes-clip-a", "textnorm_t2i.rewards.shapes:build_shapes", "world"),
    "shapes-clip-b": RewardEntry("shapes-clip-b",
                                 "embedded proxy: CNN + transformer dual encoder, noisy captions (shipped)",
                                 SHIPPED + "shapes-clip-b", "textnorm_t2i.rewards.shapes:build_shapes", "world"),
    "shapes-pref": RewardEntry("shapes-pref",
                               "embedded proxy: shapes-clip-a fine-tuned on simulated preferences (shipped)",
                               SHIPPED + "shapes-pref", "textnorm_t2i.rewards.shapes:build_shapes", "world"),
    "shapes-detect": RewardEntry("shapes-detect",
                                 "embedded near-gold proxy: log P(parse satisfies prompt) of a CNN trained to "
                                 "predict the oracle's parse (shipped; differentiable, foolable)",
                                 SHIPPED + "shapes-detect", "textnorm_t2i.rewards.detect:build_detect", "world"),
    **{name: RewardEntry(name, f"embedded, known structure: log p(prompt | perceived scene) + w x look; {what}",
                         name, "textnorm_t2i.rewards.perceive:build_perceive", "world")
       for name, what in (("shapes-perceive-clean", "no perception noise, w = 0 (the positive control)"),
                          ("shapes-perceive-noisy", "realistic perception noise, w = 1"),
                          ("shapes-perceive-looks", "realistic perception noise, w = 4 (an exploitable look term)"))},
}

_USER_REWARDS: dict[str, RewardEntry] = {}


def register_reward(name: str, description: str, default_path: str | None = None,
                    vocabulary: Literal["world", "open"] = "open"):
    """Decorator registering a builder ``build(path_or_id, **kw) -> Reward`` under ``name``.

    Example:
        >>> @register_reward("doc-constant", "always 0")
        ... def _build(path_or_id=None, **kw):
        ...     from textnorm_t2i.rewards.base import CallableReward
        ...     return CallableReward(lambda images, prompts: [0.0] * len(prompts), name="doc-constant")
        >>> load_reward("doc-constant").name
        'doc-constant'
    """
    if name in BUILTIN_REWARDS:
        raise InputError(f"reward name {name!r} is built in; choose another name")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        _USER_REWARDS[name] = RewardEntry(name, description, default_path, fn, vocabulary)
        return fn

    return wrap


def list_rewards() -> list[RewardEntry]:
    """Every reward (built in and registered), sorted by name.

    Example:
        >>> {"clip", "pickscore", "blip2"} <= {e.name for e in list_rewards()}
        True
    """
    return sorted({**BUILTIN_REWARDS, **_USER_REWARDS}.values(), key=lambda e: e.name)


def reward_entry(name: str) -> RewardEntry:
    """The entry of a reward name; an unknown name is an error listing the known ones.

    Example:
        >>> reward_entry("shapes-clip-a").vocabulary
        'world'
    """
    entry = BUILTIN_REWARDS.get(name) or _USER_REWARDS.get(name)
    if entry is None:
        known = sorted({**BUILTIN_REWARDS, **_USER_REWARDS})
        raise InputError(f"unknown reward {name!r} (registered: {', '.join(known)})")
    return entry


def resolve_path(path: str | None) -> str | None:
    """A default path as a real one (``shipped:NAME`` -> the package's model folder)."""
    if path and path.startswith(SHIPPED):
        from importlib import resources

        return str(resources.files("textnorm_t2i") / "data" / "models" / path[len(SHIPPED):])
    return path


def load_reward(name: str, path_or_id: str | None = None, **kwargs: Any) -> Any:
    """Build a reward by name; ``path_or_id`` defaults to the reward's usual weights.

    Example:
        >>> load_reward("nope")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: unknown reward 'nope' (registered: ...)
    """
    entry = reward_entry(name)
    return entry.build(resolve_path(path_or_id or entry.default_path), **kwargs)
