"""The vocabulary of the synthetic world: colours, shapes, count words, relations (see docs/world.md)."""

from __future__ import annotations

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 80, 255),
    "yellow": (240, 220, 30),
}
SHAPES = ("circle", "square", "triangle")
PLURAL = {s: s + "s" for s in SHAPES}
SINGULAR = {v: k for k, v in PLURAL.items()}
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
NUMBER_WORD = {1: "a", 2: "two", 3: "three", 4: "four"}
MAX_OBJECTS = 4
LEAD_INS = ("a photo of", "an image of", "a picture of")
# Relation phrases, longest first so that "to the left of" wins over "left of".
RELATIONS = {"to the left of": "left", "to the right of": "right", "on the left of": "left",
             "on the right of": "right", "left of": "left", "right of": "right", "above": "above",
             "below": "below"}
RELATION_PHRASE = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
BASE_SIZE = 32  # sizes below are in pixels at 32 x 32 and scale with the canvas
MIN_OBJECT, MAX_OBJECT = 6, 10
