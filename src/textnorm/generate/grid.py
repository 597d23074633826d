"""Image grids with optional row labels (for sample sheets and reports)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw


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
    for r, text in enumerate(labels or []):
        draw.text((4, pad + r * (h + pad) + h // 2 - 5), text[:44], fill=(230, 230, 230))
    return grid
