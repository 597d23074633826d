"""Contrastive prompt sets from files: the shipped TIA2 sets or any ``{prompt: [contrastive, ...]}`` JSON."""

from __future__ import annotations

import os
from pathlib import Path

from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import read_json


def load_prompt_sets(source: str | os.PathLike) -> dict[str, list[str]]:
    """Load prompt sets: ``"tia2"`` (all shipped subsets), ``"tia2:<subset>"``, or a JSON file path.

    Example:
        >>> sets = load_prompt_sets("tia2:counting")
        >>> sets["a realistic photo of three books"][:2]
        ['a realistic photo of a book', 'a realistic photo of two books']
    """
    name = str(source)
    if name == "tia2" or name.startswith("tia2:"):
        subsets = [name.split(":", 1)[1]] if ":" in name else None
        merged: dict[str, list[str]] = {}
        for subset in load_benchmark(subsets=subsets).values():
            merged.update(subset.prompt_sets)
        return merged
    path = Path(source)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {{prompt: [contrastive prompt, ...]}}")
    for prompt, contrast in data.items():
        if not isinstance(contrast, list) or not all(isinstance(c, str) for c in contrast):
            raise InputError(f"{path}: key {prompt!r}: expected a list of strings")
    return data


def read_prompt_list(path: str | os.PathLike) -> list[str]:
    """Prompts from a text file (one per line) or a JSON list / JSON object (its keys).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.txt"
        >>> _ = p.write_text("two dogs\\n\\na cat\\n")
        >>> read_prompt_list(p)
        ['two dogs', 'a cat']
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path)
        items = list(data) if isinstance(data, (list, dict)) else None
        if items is None or not all(isinstance(p, str) for p in items):
            raise InputError(f"{path}: expected a JSON list of prompt strings")
        prompts = items
    else:
        try:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
    prompts = [p for p in prompts if p]
    if not prompts:
        raise InputError(f"{path}: no prompts found")
    return list(dict.fromkeys(prompts))
