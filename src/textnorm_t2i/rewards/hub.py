"""Loading real models from a local folder or a hub id, with one clear message when that fails."""

from __future__ import annotations

import os
from typing import Any

from textnorm_t2i.errors import InputError


def looks_like_path(path_or_id: str) -> bool:
    """True for what can only be a local path (a hub id is ``name`` or ``org/name``).

    Example:
        >>> looks_like_path("openai/clip-vit-base-patch32"), looks_like_path("./models/clip"), looks_like_path("/m")
        (False, True, True)
    """
    text = str(path_or_id)
    return (text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1
            or os.path.exists(os.path.expanduser(text)))


def offline() -> bool:
    """Is the hub switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true value)?"""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_pretrained(cls: Any, path_or_id: str, reward: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path_or_id)`` with safetensors only; a clear one-line :class:`InputError` on failure.

    A local path that does not exist fails at once ("no such folder"); a hub id is looked up in the local
    cache first, and on the hub only when ``HF_HUB_OFFLINE`` is not set.

    Example:
        >>> from transformers import CLIPModel
        >>> load_pretrained(CLIPModel, "/nonexistent/clip", "clip")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: reward 'clip': /nonexistent/clip: no such folder ...
    """
    if cls.__name__.endswith(("Model", "Retrieval")) or "For" in cls.__name__:
        kwargs.setdefault("use_safetensors", True)  # never unpickle weights
    hint = (f"download it where there is access (`hf download {path_or_id} --local-dir DIR`, safetensors "
            f"weights), copy DIR here and pass it as the path (e.g. --reward {reward}=DIR)")
    if looks_like_path(path_or_id):
        folder = os.path.expanduser(str(path_or_id))
        if not os.path.isdir(folder):
            raise InputError(f"reward {reward!r}: {path_or_id}: no such folder (a local model folder was expected; "
                             f"or give a hub id)")
        path_or_id = folder
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the one line below replaces transformers' retries and warnings
    try:
        try:
            return cls.from_pretrained(path_or_id, local_files_only=True, **kwargs)
        except (OSError, ValueError) as e:
            if looks_like_path(path_or_id) or offline():
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                where = "" if looks_like_path(path_or_id) else " (not in the local cache; HF_HUB_OFFLINE is set)"
                raise InputError(f"reward {reward!r}: cannot load {cls.__name__} from {path_or_id!r}{where}: "
                                 f"{first[:160]}. {hint[0].upper() + hint[1:]}") from None
        try:
            return cls.from_pretrained(path_or_id, **kwargs)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"reward {reward!r}: cannot load {cls.__name__} from {path_or_id!r} ({first[:160]}). "
                             f"Without hub access, {hint}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def processor_stats(cls: Any, path_or_id: str) -> dict[str, Any]:
    """``image_mean``, ``image_std`` and ``image_size`` from an image-processor config, or ``{}`` if absent.

    Example:
        >>> from transformers import CLIPImageProcessorPil
        >>> processor_stats(CLIPImageProcessorPil, "/nonexistent")
        {}
    """
    try:
        proc = cls.from_pretrained(path_or_id)
    except (OSError, ValueError):
        return {}
    size = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    size = size or proc.size
    height = size.get("height") or size.get("shortest_edge") if hasattr(size, "get") else size
    if height is None:
        height = getattr(size, "height", None) or getattr(size, "shortest_edge", None)
    stats = {"image_mean": tuple(proc.image_mean), "image_std": tuple(proc.image_std)}
    if height:
        stats["image_size"] = int(height)
    return stats
