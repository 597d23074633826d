"""textnorm: confidence-aware reward optimization for text-to-image models.

Heavy dependencies (torch, transformers, diffusers) are imported only by the modules that need them,
so ``import textnorm`` and the benchmark tools stay fast.
"""

from textnorm.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
