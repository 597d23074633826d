"""Reward models behind one interface: ``reward(images, prompts) -> torch.Tensor``.

Names load lazily, so that configs can import :mod:`textnorm.rewards.spec` without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "CallableReward": "textnorm.rewards.base", "DualEncoderReward": "textnorm.rewards.base",
    "Reward": "textnorm.rewards.base", "as_reward": "textnorm.rewards.base", "to_tensor": "textnorm.rewards.base",
    "list_rewards": "textnorm.rewards.registry", "load_reward": "textnorm.rewards.registry",
    "register_reward": "textnorm.rewards.registry", "RewardSpec": "textnorm.rewards.spec",
    "build_reward": "textnorm.rewards.factory",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textnorm.rewards' has no attribute {name!r}")
