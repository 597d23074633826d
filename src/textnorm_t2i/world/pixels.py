"""Model images as the world sees them: the one float-to-uint8 conversion (the oracle judges uint8 pixels)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_uint8(images: Any) -> np.ndarray:
    """``N x 3 x H x W`` images in [0, 1] (a torch tensor) as an ``N x H x W x 3`` uint8 array.

    Example:
        >>> import torch
        >>> to_uint8(torch.ones(1, 3, 2, 2)).shape
        (1, 2, 2, 3)
    """
    return (images.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
