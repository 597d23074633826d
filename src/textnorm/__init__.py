"""textnorm: confidence-aware reward optimization for text-to-image models.

Heavy dependencies (torch, transformers, diffusers) load only when a name that needs them is used,
so ``import textnorm`` and the benchmark tools stay fast.

Example:
    >>> import textnorm
    >>> textnorm.TextNorm.__name__
    'TextNorm'
"""

from importlib import import_module
from typing import Any

from textnorm.errors import InputError

__version__ = "0.1.0"

_LAZY = {
    "TextNorm": "textnorm.calibrate.textnorm",
    "Ensemble": "textnorm.calibrate.ensemble",
    "select_hyperparameters": "textnorm.calibrate.select",
    "Reward": "textnorm.rewards.base",
    "load_reward": "textnorm.rewards.registry",
    "list_rewards": "textnorm.rewards.registry",
    "load_benchmark": "textnorm.bench.tia2",
    "load_subset": "textnorm.bench.tia2",
}
__all__ = ["InputError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textnorm' has no attribute {name!r}")
