"""Image grids with optional row labels (for sample sheets and reports)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from textnorm_t2i.world.pixels import to_uint8  # also imported from here by the reports


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``N x 3 x H x W`` images in [0, 1] as PIL images.

    Example:
        >>> to_pil(torch.zeros(2, 3, 4, 4))[0].size
        (4, 4)
    """
    return [Image.fromarray(a) for a in to_uint8(images)]


def image_grid(images: Sequence[Image.Image], rows: int, scale: int = 1, labels: Sequence[str] | None = None,
               pad: int = 2, label_width: int = 260) -> Image.Image:
    """Tile images in ``rows`` rows (nearest-neighbour upscaled by ``scale``), labelling each row.

    Example:
        >>> g = image_grid([Image.new("RGB", (8, 8))] * 6, rows=2, scale=2)
        >>> g.size
        (56, 38)
    """
    if not images:
        raise ValueError("no images to tile")
    cols = -(-len(images) // rows)
    w, h = images[0].size[0] * scale, images[0].size[1] * scale
    left = label_width if labels else 0
    grid = Image.new("RGB", (left + cols * (w + pad) + pad, rows * (h + pad) + pad), (40, 40, 40))
    draw = ImageDraw.Draw(grid)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(img.resize((w, h), Image.Resampling.NEAREST), (left + pad + c * (w + pad), pad + r * (h + pad)))
    # Labels are wrapped at word boundaries to the label column (PIL's default font: about 6 px a character,
    # 11 px a line), centred on their row; never cut mid-prompt.
    per_line = max(8, (label_width - 8) // 6)
    for r, text in enumerate(labels or []):
        lines = textwrap.wrap(text, per_line, break_long_words=True) or [""]
        top = pad + r * (h + pad) + max(0, (h - 11 * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((4, top + 11 * k), line, fill=(230, 230, 230))
    return grid
