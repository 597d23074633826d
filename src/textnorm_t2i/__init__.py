"""textnorm_t2i: confidence-aware reward optimization for text-to-image models.

The distribution is ``textnorm-t2i`` (``pip install textnorm-t2i``; the name ``textnorm`` on the package
index is an unrelated package); the command is ``textnorm``.

Heavy dependencies (torch, transformers, diffusers) load only when a name that needs them is used,
so ``import textnorm_t2i`` and the benchmark tools stay fast.

Example:
    >>> import textnorm_t2i
    >>> textnorm_t2i.TextNorm.__name__
    'TextNorm'
"""

from importlib import import_module
from typing import Any

from textnorm_t2i.errors import InputError

__version__ = "0.1.0"

_LAZY = {
    "TextNorm": "textnorm_t2i.calibrate.textnorm",
    "Ensemble": "textnorm_t2i.calibrate.ensemble",
    "select_hyperparameters": "textnorm_t2i.calibrate.select",
    "Reward": "textnorm_t2i.rewards.base",
    "load_reward": "textnorm_t2i.rewards.registry",
    "list_rewards": "textnorm_t2i.rewards.registry",
    "load_benchmark": "textnorm_t2i.bench.tia2",
    "load_subset": "textnorm_t2i.bench.tia2",
}
__all__ = ["InputError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textnorm_t2i' has no attribute {name!r}")
