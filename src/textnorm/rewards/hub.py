"""Loading real models from a local folder or a hub id, with one clear message when that fails."""

from __future__ import annotations

from typing import Any

from textnorm.errors import InputError


def load_pretrained(cls: Any, path_or_id: str, reward: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path_or_id)`` with safetensors only; a clear :class:`InputError` on failure.

    Example:
        >>> from transformers import CLIPModel
        >>> load_pretrained(CLIPModel, "/nonexistent/clip", "clip")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm.errors.InputError: reward 'clip': cannot load CLIPModel from '/nonexistent/clip' ...
    """
    if cls.__name__.endswith(("Model", "Retrieval")) or "For" in cls.__name__:
        kwargs.setdefault("use_safetensors", True)  # never unpickle weights
    try:
        return cls.from_pretrained(path_or_id, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"reward {reward!r}: cannot load {cls.__name__} from {path_or_id!r} ({first[:160]}). Without hub "
            f"access, download it elsewhere (`huggingface-cli download {path_or_id} --local-dir DIR`, "
            f"safetensors weights), copy DIR here and pass it as the path (e.g. --reward {reward}=DIR)"
        ) from None


def processor_stats(cls: Any, path_or_id: str) -> dict[str, Any]:
    """``image_mean``, ``image_std`` and ``image_size`` from an image-processor config, or ``{}`` if absent.

    Example:
        >>> from transformers import CLIPImageProcessor
        >>> processor_stats(CLIPImageProcessor, "/nonexistent")
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
