"""The folder of an embedded reward model: ``config.json`` (architecture, training settings, name) beside
``model.safetensors`` (the weights; never a pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import atomic_write, write_json_atomic


def read_model_folder(path: str | os.PathLike) -> tuple[dict, dict[str, Any]]:
    """``(config, state_dict)`` of an embedded reward's folder; a folder without both files is one clear error.

    Example:
        >>> read_model_folder("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /nonexistent: not an embedded reward model (expected config.json and ...)
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise InputError(f"{folder}: not an embedded reward model (expected config.json and model.safetensors)")
    return json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")


def write_model_folder(path: str | os.PathLike, model: Any, name: str) -> None:
    """Write ``model`` (a module with a ``config`` dict) and its name into ``path``, each file atomically."""
    from safetensors.torch import save

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "model.safetensors", "wb") as f:
        f.write(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    write_json_atomic(folder / "config.json", {**model.config, "name": name})
