"""Scenes of coloured shapes on black, and their rendering (docs/world.md describes them).

Sizes are given at 32 x 32 and scale with the canvas. Shapes are drawn 4x supersampled and
downsampled, which gives anti-aliased edges.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from textnorm_t2i.errors import InputError
from textnorm_t2i.world.grammar import Spec, parse
from textnorm_t2i.world.vocab import BASE_SIZE, COLORS, MAX_OBJECT, MIN_OBJECT, SHAPES

SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    """One object: its shape, colour and bounding box ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive).

    Example:
        >>> SceneObject("circle", "red", (2, 2, 10, 10)).center
        (6.0, 6.0)
    """

    shape: str
    color: str
    bbox: tuple[float, float, float, float]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass(frozen=True)
class Scene:
    """A canvas size and its objects."""

    size: int
    objects: tuple[SceneObject, ...]


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < BASE_SIZE:
        raise InputError(f"canvas size must be an integer >= {BASE_SIZE}, got {size!r}")


def _gap_ok(a: tuple, b: tuple, gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _relation_holds(kind: str, a: tuple, b: tuple) -> bool:
    (ax, ay), (bx, by) = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    dx, dy = bx - ax, by - ay
    # Placed so that the relation is the dominant direction: unambiguous to a human reader.
    return {"left": dx > abs(dy), "right": -dx > abs(dy), "above": dy > abs(dx), "below": -dy > abs(dx)}[kind]


def sample_scene(spec: Spec, rng: random.Random, size: int = BASE_SIZE, max_tries: int = 2000) -> Scene:
    """A random scene that satisfies ``spec``: the described objects and nothing else.

    Example:
        >>> scene = sample_scene(parse("two red circles"), random.Random(0))
        >>> [(o.shape, o.color) for o in scene.objects]
        [('circle', 'red'), ('circle', 'red')]
    """
    _check_size(size)
    scale = size / BASE_SIZE
    kinds = [(c.shape, c.color or rng.choice(list(COLORS))) for c in spec.clauses for _ in range(c.count)]
    for _ in range(max_tries):
        boxes: list[tuple[int, int, int, int]] = []
        for _obj in kinds:
            side = round(rng.randint(MIN_OBJECT, MAX_OBJECT) * scale)
            margin = round(scale)
            for _attempt in range(100):
                x0 = rng.randint(margin, size - margin - side)
                y0 = rng.randint(margin, size - margin - side)
                box = (x0, y0, x0 + side, y0 + side)
                if all(_gap_ok(box, other, max(1, round(scale))) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) != len(kinds):
            continue
        if spec.relation is not None and not _relation_holds(spec.relation.kind, boxes[0], boxes[1]):
            continue
        return Scene(size, tuple(SceneObject(s, c, b) for (s, c), b in zip(kinds, boxes)))
    raise InputError(f"could not place the objects of {spec.to_prompt()!r} on a {size}x{size} canvas")


def draw_scene(scene: Scene) -> Image.Image:
    """Render a scene as an RGB PIL image (black background, anti-aliased shapes).

    Example:
        >>> img = draw_scene(Scene(32, (SceneObject("square", "red", (4, 4, 12, 12)),)))
        >>> img.getpixel((8, 8)), img.getpixel((20, 20))
        ((230, 30, 30), (0, 0, 0))
    """
    k = SUPERSAMPLE
    big = Image.new("RGB", (scene.size * k, scene.size * k), (0, 0, 0))
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        if obj.shape not in SHAPES or obj.color not in COLORS:
            raise InputError(f"unknown object {obj.color} {obj.shape}")
        x0, y0, x1, y1 = (v * k for v in obj.bbox)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        else:  # isosceles triangle, apex up
            draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    return big.resize((scene.size, scene.size), Image.Resampling.BOX)


def render(spec_or_prompt: Spec | str | Scene, seed: int = 0, size: int = BASE_SIZE) -> Image.Image:
    """Draw a random scene satisfying a prompt (or spec), or draw a given scene.

    Example:
        >>> render("a photo of three blue triangles", seed=1, size=64).size
        (64, 64)
    """
    if isinstance(spec_or_prompt, Scene):
        return draw_scene(spec_or_prompt)
    spec = parse(spec_or_prompt) if isinstance(spec_or_prompt, str) else spec_or_prompt
    return draw_scene(sample_scene(spec, random.Random(seed), size))
