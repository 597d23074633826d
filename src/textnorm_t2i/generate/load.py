"""Loading text-to-image generators: the shipped embedded model or a pipeline folder."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.pipeline import ShapesPipeline


def shipped_generator_dir() -> Path:
    """Folder of the embedded generator shipped inside the package."""
    return Path(str(resources.files("textnorm_t2i") / "data" / "models" / "shapes-generator"))


def load_generator(name_or_path: str | os.PathLike = "shapes"):
    """The embedded generator (``"shapes"``) or a :class:`ShapesPipeline` saved in a folder.

    Example:
        >>> pipe = load_generator("shapes")  # doctest: +SKIP
    """
    path = shipped_generator_dir() if str(name_or_path) == "shapes" else Path(name_or_path)
    if not (path / "model_index.json").exists():
        raise InputError(f"{path}: not a pipeline folder (no model_index.json)")
    pipe = ShapesPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe
