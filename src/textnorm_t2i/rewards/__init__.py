"""Reward models behind one interface: ``reward(images, prompts) -> torch.Tensor``.

Names load lazily, so that configs can import :mod:`textnorm_t2i.rewards.spec` without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "CallableReward": "textnorm_t2i.rewards.base", "DualEncoderReward": "textnorm_t2i.rewards.base",
    "Reward": "textnorm_t2i.rewards.base", "as_reward": "textnorm_t2i.rewards.base",
    "to_tensor": "textnorm_t2i.rewards.base",
    "list_rewards": "textnorm_t2i.rewards.registry", "load_reward": "textnorm_t2i.rewards.registry",
    "register_reward": "textnorm_t2i.rewards.registry", "RewardSpec": "textnorm_t2i.rewards.spec",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textnorm_t2i.rewards' has no attribute {name!r}")
