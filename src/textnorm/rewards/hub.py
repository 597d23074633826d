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
