"""Loading the pipeline to fine-tune: the embedded generator or any diffusers pipeline folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.load import load_generator, shipped_generator_dir
from textnorm_t2i.io import read_json


def load_pipeline(name_or_path: str | os.PathLike) -> Any:
    """``"shapes"`` (the shipped embedded model), a ShapesPipeline folder, or a Stable Diffusion-style
    diffusers pipeline folder (safetensors weights only; no remote code).

    Example:
        >>> load_pipeline("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /nonexistent: not a pipeline folder (no model_index.json)
    """
    if str(name_or_path) == "shapes":
        return load_generator("shapes")
    path = Path(name_or_path)
    index = path / "model_index.json"
    if not index.exists():
        raise InputError(f"{path}: not a pipeline folder (no model_index.json)")
    described = read_json(index)
    if not isinstance(described, dict):
        raise InputError(f"{index}: expected a JSON object describing the pipeline")
    if described.get("_class_name") == "ShapesPipeline":
        return load_generator(path)
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(path, use_safetensors=True)
    except (AttributeError, ImportError, OSError, ValueError, KeyError, TypeError) as e:  # a foreign or broken folder
        reason = str(e).splitlines()[0][:160] if str(e) else ""
        raise InputError(f"{path}: cannot load the pipeline ({type(e).__name__}: {reason})") from None
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_scheduler_config(name_or_path: str | os.PathLike) -> dict:
    """The noise scheduler's configuration of a pipeline (read from its folder; no weights load).

    Example:
        >>> load_scheduler_config("shapes")["prediction_type"]
        'v_prediction'
    """
    path = shipped_generator_dir() if str(name_or_path) == "shapes" else Path(name_or_path)
    config = path / "scheduler" / "scheduler_config.json"
    if not config.is_file():
        raise InputError(f"{path}: not a pipeline folder (no scheduler/scheduler_config.json)")
    scheduler = read_json(config)
    if not isinstance(scheduler, dict):
        raise InputError(f"{config}: expected a JSON object (the scheduler's configuration)")
    return scheduler
