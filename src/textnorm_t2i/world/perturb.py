"""Perturbations that imitate a generator's imperfections, for testing the oracle's robustness."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def add_noise(image: Image.Image, sigma: float = 10 / 255, seed: int = 0) -> Image.Image:
    """Gaussian pixel noise of standard deviation ``sigma`` (in [0, 1] units).

    Example:
        >>> add_noise(Image.new("RGB", (32, 32)), seed=1).size
        (32, 32)
    """
    rng = np.random.default_rng(seed)
    arr = np.asarray(image, dtype=np.float32) + rng.normal(0.0, sigma * 255.0, size=(*image.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def blur(image: Image.Image, radius: float = 0.6) -> Image.Image:
    """A light Gaussian blur; ``radius`` in pixels at 32 x 32, scaled with the image size."""
    return image.filter(ImageFilter.GaussianBlur(radius * image.size[0] / 32))


def color_jitter(image: Image.Image, amount: int = 20, seed: int = 0) -> Image.Image:
    """Shift each channel of the whole image by a random offset in [-amount, amount]."""
    rng = np.random.default_rng(seed)
    offset = rng.integers(-amount, amount + 1, size=3)
    arr = np.asarray(image, dtype=np.int16) + offset
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def perturb_all(image: Image.Image, seed: int = 0) -> Image.Image:
    """Blur, then colour jitter, then noise (the order a generator's errors would compound)."""
    return add_noise(color_jitter(blur(image), seed=seed), seed=seed)
