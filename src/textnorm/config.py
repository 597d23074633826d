"""YAML experiment configs with ``key=value`` overrides from the command line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from textnorm.errors import InputError


def set_by_path(config: dict, dotted: str, value: Any) -> None:
    """Set ``config["a"]["b"] = value`` for ``dotted="a.b"``.

    Example:
        >>> c = {"train": {"lr": 1e-3}}; set_by_path(c, "train.lr", 0.1); c
        {'train': {'lr': 0.1}}
    """
    keys = dotted.split(".")
    node = config
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise InputError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] | None = None) -> dict:
    """Read a YAML config (or start empty) and apply ``key.sub=value`` overrides (values parsed as YAML).

    Example:
        >>> load_config(None, ["steps=10", "model.text_hidden=32"])
        {'steps': 10, 'model': {'text_hidden': 32}}
    """
    config: dict = {}
    if path is not None:
        p = Path(path)
        try:
            config = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise InputError(f"{p}: config file not found") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise InputError(f"{p}{where}: malformed YAML") from None
        if not isinstance(config, dict):
            raise InputError(f"{p}: a config must be a mapping of keys to values")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"bad override {item!r}: expected key=value")
        set_by_path(config, key, yaml.safe_load(value))
    return config
