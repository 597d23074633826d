"""A second, deliberately different renderer following docs/world.md: hard edges (no anti-aliasing),
objects exactly 1 px apart allowed, PIL primitives drawn with their own conventions."""
import random

from PIL import Image, ImageDraw

COLORS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (40, 80, 255), "yellow": (240, 220, 30)}

def draw(objects, size):
    """objects: [(shape, colour, (x, y, side))]; hard edges, colours jittered by up to 8 per channel."""
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    for shape, color, (x, y, s) in objects:
        c = tuple(min(255, max(0, v + random.Random(x * 31 + y).randint(-8, 8))) for v in COLORS[color])
        if shape == "circle":
            d.ellipse([x, y, x + s, y + s], fill=c)
        elif shape == "square":
            d.rectangle([x, y, x + s, y + s], fill=c)
        else:
            d.polygon([(x + s / 2, y), (x + s, y + s), (x, y + s)], fill=c)
    return img

def place(kinds, size, rng, gap=1):
    """Random non-overlapping boxes, 6-10 px at 32 (scaled), at least ``gap`` px apart."""
    scale = size / 32
    while True:
        boxes = []
        for _ in kinds:
            s = int(rng.uniform(6, 10) * scale)
            for _ in range(200):
                x, y = rng.randint(0, size - s - 1), rng.randint(0, size - s - 1)
                if all(x + s + gap < bx or bx + bs + gap < x or y + s + gap < by or by + bs + gap < y
                       for bx, by, bs in boxes):
                    boxes.append((x, y, s))
                    break
            else:
                break
        if len(boxes) == len(kinds):
            return [(sh, co, b) for (sh, co), b in zip(kinds, boxes)]
