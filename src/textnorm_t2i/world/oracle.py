"""The oracle judge: parses any RGB image of the world into objects and checks them against a prompt.

Classical image processing, robust to what a generator produces (noise, blur, colour drift, tinted
backgrounds, slightly irregular shapes):

1. *Chroma* (max - min over RGB) separates the saturated objects from the dark, grey background.
2. Pixels are given a colour class by hue; connected regions of the loose mask (chroma > 50) are
   cut at half of their own peak chroma (so anti-aliased or blurred bridges between neighbours do
   not join them) and split by colour class.
3. Regions whose coverage (soft area) is below a speck threshold are ignored.
4. Each region's shape comes from scale-free moments of its soft coverage (see
   :func:`_classify_shape`). Too large or elongated regions (merged blobs) are "unknown" and never
   count as two objects.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from textnorm_t2i.errors import InputError
from textnorm_t2i.world.check import Obj, check
from textnorm_t2i.world.grammar import Spec, parse
from textnorm_t2i.world.vocab import BASE_SIZE

LOOSE_CHROMA = 50.0
# Hue ranges in degrees, for the four colours of the world.
HUE_CLASSES = (("red", 330.0, 360.0), ("red", 0.0, 28.0), ("yellow", 28.0, 85.0), ("green", 85.0, 170.0),
               ("blue", 170.0, 290.0))
_EIGHT = np.ones((3, 3), dtype=bool)
COLOR_INDEX = {name: i for i, name in enumerate(dict.fromkeys(name for name, _, _ in HUE_CLASSES))}


@dataclass
class DetectedObject:
    """An object found in an image: shape and colour (or ``"unknown"``), bbox (x0, y0, x1, y1), centre."""

    shape: str
    color: str
    bbox: tuple[int, int, int, int]
    center: tuple[float, float]
    area: float

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "bbox": list(self.bbox),
                "center": [round(self.center[0], 2), round(self.center[1], 2)]}


@dataclass
class Verdict:
    """The oracle's judgement: aligned or not, why, and what it saw."""

    aligned: bool
    reasons: list[str]
    objects: list[DetectedObject] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"aligned": self.aligned, "reasons": self.reasons, "objects": [o.to_dict() for o in self.objects]}


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    else:
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:
            arr = arr.transpose(1, 2, 0)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"expected an RGB image, got an array of shape {arr.shape}")
    h, w = arr.shape[:2]
    if h != w or h < BASE_SIZE:
        raise InputError(f"expected a square image of at least {BASE_SIZE}x{BASE_SIZE} pixels, got {w}x{h}")
    return arr


def _hue_class(rgb: np.ndarray) -> str:
    h, _, _ = colorsys.rgb_to_hsv(*(np.clip(rgb, 0, 255) / 255.0))
    deg = h * 360.0
    for name, lo, hi in HUE_CLASSES:
        if lo <= deg < hi:
            return name
    return "unknown"


def _pixel_hue(arr: np.ndarray) -> np.ndarray:
    """Hue in degrees per pixel (vectorised HSV)."""
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    mx, mn = arr.max(axis=2), arr.min(axis=2)
    c = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return hue * 60.0


def _classify_shape(cov: np.ndarray, scale: float) -> str:
    """Shape from the moments of a region's soft coverage map (robust to blur and pixelation).

    - skewness of y: an apex-up triangle holds its mass low (about -0.57); circles and squares 0;
    - ``E[x^2 y^2] / E[x^4]`` (mean over both axes): 0.56 for a square, 0.33 for a disc; blur moves
      both towards 1/3 but they stay apart at the sizes of the world;
    - too large, too small or elongated regions (merged blobs, fragments) are "unknown".
    """
    ys, xs = np.nonzero(cov)
    w = cov[ys, xs]
    area = w.sum()
    dx = xs - (w * xs).sum() / area
    dy = ys - (w * ys).sum() / area
    vx, vy = (w * dx * dx).sum() / area, (w * dy * dy).sum() / area
    cxy = (w * dx * dy).sum() / area
    # Eigenvalues of the covariance: elongated in any direction (two blobs merged diagonally too).
    half_gap = np.sqrt(((vx - vy) / 2) ** 2 + cxy**2)
    major, minor = (vx + vy) / 2 + half_gap, (vx + vy) / 2 - half_gap
    side = np.sqrt(area)
    if side > 12.5 * scale or side < 3.0 * scale or major > 2.2 * max(minor, 1e-6):
        return "unknown"
    skew_y = (w * dy**3).sum() / area / max(vy, 1e-6) ** 1.5
    if skew_y < -0.25:
        return "triangle"
    if skew_y > 0.25:
        return "unknown"  # upside-down or lopsided
    cross = (w * dx * dx * dy * dy).sum()
    fourth = 0.5 * ((w * dx**4).sum() + (w * dy**4).sum())
    return "square" if cross / max(fourth, 1e-9) > 0.43 else "circle"


def detect(image: Image.Image | np.ndarray) -> list[DetectedObject]:
    """Objects in an image of the world (any square size from 32 px up).

    Example:
        >>> from textnorm_t2i.world.scene import render
        >>> [(o.shape, o.color) for o in detect(render("a red circle", seed=0))]
        [('circle', 'red')]
    """
    arr = _as_array(image)
    scale = arr.shape[0] / BASE_SIZE
    chroma = arr.max(axis=2) - arr.min(axis=2)
    hue = _pixel_hue(arr)
    pixel_class = np.full(chroma.shape, -1, dtype=np.int8)
    for name, lo, hi in HUE_CLASSES:
        pixel_class[(hue >= lo) & (hue < hi)] = COLOR_INDEX[name]

    loose, _ = ndimage.label(chroma > LOOSE_CHROMA, structure=_EIGHT)
    speck = 6.0 * scale * scale
    objects = []
    for idx, sl in enumerate(ndimage.find_objects(loose), start=1):
        # Work on the component's box grown by one pixel, so that dilation stays inside it.
        pad = max(1, round(scale))
        box = tuple(slice(max(0, s.start - pad), s.stop + pad) for s in sl)
        region = loose[box] == idx
        c = np.where(region, chroma[box], 0.0)
        values = np.sort(c[region])
        coverage = np.clip(c / max(values[int(0.9 * (len(values) - 1))], 1e-6), 0.0, 1.0)
        strong = coverage >= 0.5
        classes = pixel_class[box]
        present = np.unique(classes[strong])
        for k in present:
            same = classes == k
            parts, n_parts = ndimage.label(strong & same if len(present) > 1 else strong, structure=_EIGHT)
            for j in range(1, n_parts + 1):
                core = parts == j
                if n_parts == 1 and len(present) == 1:
                    cov = np.where(region, coverage, 0.0)  # the usual case: one object, keep its whole rim
                else:
                    # The part's anti-aliased rim: weaker neighbouring pixels of the same colour.
                    grown = ndimage.binary_dilation(core, structure=_EIGHT, iterations=max(1, round(scale)))
                    cov = np.where(core | (grown & region & same & ~strong), coverage, 0.0)
                area = float(cov.sum())
                if area < speck:
                    continue  # a speck of noise
                ys, xs = np.nonzero(core)
                oy, ox = box[0].start, box[1].start
                cy = float((cov.sum(axis=1) * (np.arange(cov.shape[0]) + 0.5)).sum() / area) + oy
                cx = float((cov.sum(axis=0) * (np.arange(cov.shape[1]) + 0.5)).sum() / area) + ox
                color = _hue_class(arr[box][core].mean(axis=0))
                shape = _classify_shape(cov, scale)
                bbox = (int(ox + xs.min()), int(oy + ys.min()), int(ox + xs.max() + 1), int(oy + ys.max() + 1))
                objects.append(DetectedObject(shape, color, bbox, (cx, cy), area))
    objects.sort(key=lambda o: (o.center[1], o.center[0]))
    return objects


def fidelity(objects: list[DetectedObject]) -> bool:
    """Is the image well formed: at least one object, and every object a recognisable shape and colour?

    Example:
        >>> from textnorm_t2i.world.scene import render
        >>> fidelity(detect(render("two red circles", seed=0)))
        True
    """
    return bool(objects) and all(o.shape != "unknown" and o.color != "unknown" for o in objects)


def judge(image: Image.Image | np.ndarray, prompt: str | Spec) -> Verdict:
    """Is the image exactly what the prompt describes? Strict: nothing more, nothing less.

    Example:
        >>> from textnorm_t2i.world.scene import render
        >>> img = render("two blue squares and a yellow triangle", seed=3)
        >>> judge(img, "two blue squares and a yellow triangle").aligned
        True
        >>> judge(img, "three blue squares and a yellow triangle").reasons
        ['expected 3 blue squares, found 2']
    """
    spec = parse(prompt) if isinstance(prompt, str) else prompt
    objects = detect(image)
    aligned, reasons = check(spec, [Obj(o.shape, o.color, o.center) for o in objects])
    return Verdict(aligned, reasons, objects)

