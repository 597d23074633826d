"""ImageReward and HPSv2 through their own PyPI packages (optional extras, imported lazily).

Both packages load ``.pt`` checkpoints with ``torch.load``, i.e. they unpickle. textnorm never does
that silently: pass ``allow_pickle=True`` only for checkpoints you trust.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.grid import to_pil
from textnorm_t2i.rewards.base import Images, Reward, to_tensor


def _import(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"reward {extra!r} needs the optional package: pip install 'textnorm[{extra}]'") from None


def _require_pickle_opt_in(reward: str, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise InputError(
            f"reward {reward!r}: its package loads a pickled .pt checkpoint; pass allow_pickle=True "
            "(CLI: --reward-arg allow_pickle=true) only for a checkpoint you trust"
        )


def _pil(images: Images) -> list:
    if isinstance(images, torch.Tensor):
        return to_pil(to_tensor(images).clamp(0, 1))
    return list(images)


class ImageRewardReward(Reward):
    """ImageReward (Xu et al. 2023) via the ``image-reward`` package.

    Example:
        >>> r = ImageRewardReward("ImageReward-v1.0", allow_pickle=True)  # doctest: +SKIP
    """

    name = "imagereward"

    def __init__(self, path_or_id: str = "ImageReward-v1.0", allow_pickle: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        rm = _import("ImageReward", "imagereward")
        _require_pickle_opt_in(self.name, allow_pickle)
        self.model = rm.load(path_or_id, device=str(self.device))

    def _score_batch(self, images: Images, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([float(self.model.score(p, [img])) for p, img in zip(prompts, _pil(images))])


class HPSv2Reward(Reward):
    """Human Preference Score v2 via the ``hpsv2`` package.

    Example:
        >>> r = HPSv2Reward("/path/HPS_v2_compressed.pt", allow_pickle=True)  # doctest: +SKIP
    """

    name = "hpsv2"

    def __init__(self, path_or_id: str | None = None, version: str = "v2.1", allow_pickle: bool = False,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.hpsv2 = _import("hpsv2", "hpsv2")
        _require_pickle_opt_in(self.name, allow_pickle)
        self.checkpoint = path_or_id
        self.version = version

    def _score_batch(self, images: Images, prompts: list[str]) -> torch.Tensor:
        kw = {"cp": self.checkpoint} if self.checkpoint else {}
        return torch.tensor([float(self.hpsv2.score([img], p, hps_version=self.version, **kw)[0])
                             for p, img in zip(prompts, _pil(images))])


def build_imagereward(path_or_id: str, **kw: Any) -> ImageRewardReward:
    """The ``imagereward`` reward (needs the ``image-reward`` package and ``allow_pickle=True``)."""
    return ImageRewardReward(path_or_id, **kw)


def build_hpsv2(path_or_id: str | None, **kw: Any) -> HPSv2Reward:
    """The ``hpsv2`` reward (needs the ``hpsv2`` package and ``allow_pickle=True``)."""
    return HPSv2Reward(path_or_id, **kw)
