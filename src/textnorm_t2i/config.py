"""Typed, closed configs: dataclasses loaded from YAML with ``--set a.b=value`` overrides.

Every job (fine-tuning, generator training, reward training, the study) declares its config once, as a
dataclass whose fields carry a type, a default, a help text and a range (:func:`option`). One code path,
:func:`load_config`, reads a YAML file, applies overrides and returns the typed object:

- an unknown key is an error naming the key, where it came from (the file or the ``--set``) and the
  closest valid key ("did you mean `epochs`?");
- a value is converted to the field's type or rejected (``--set lr=1e-3`` is a float, ``--set lr=abc``
  an error); numbers must be finite and inside the field's range;
- consistency between fields (a batch that does not divide, evaluation switched off where it is needed)
  is checked by the dataclass's ``check()`` before anything is loaded.

Nothing here imports torch, so a bad config fails within a second of starting.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Train(Config):
    ...     steps: int = option(100, "optimisation steps", min=1)
    ...     lr: float = option(1e-3, "learning rate", min=0, min_exclusive=True)
    >>> load_config(Train, None, ["lr=1e-2"]).lr
    0.01
    >>> load_config(Train, None, ["setps=5"])
    Traceback (most recent call last):
    ...
    textnorm_t2i.errors.InputError: --set setps=5: unknown key 'setps' (did you mean 'steps'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from textnorm_t2i.errors import InputError

C = TypeVar("C", bound="Config")
MAX_SEED = 2**32 - 1  # seeds feed numpy's SeedSequence and torch.manual_seed: non-negative, 32 bits


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, mutable_on_resume: bool = False, frozen_on_resume: bool = False,
           embedded: bool = False) -> Any:
    """A config field: its default, a one-line help text and an optional numeric range.

    ``mutable_on_resume`` marks keys that a resumed run may change (e.g. the number of epochs);
    ``frozen_on_resume`` marks a nested section none of whose keys may change, whatever its own class allows (a
    config embedded in another whose resume rules differ, e.g. the study's ``sft.train``); ``embedded`` marks a
    whole config embedded in another (its check errors name the section).
    Mutable defaults (lists, dicts, nested configs) are copied for each instance.
    """
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive,
            "mutable_on_resume": mutable_on_resume, "frozen_on_resume": frozen_on_resume, "embedded": embedded}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        import copy

        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Config:
    """Base of every typed config (use with ``@dataclass``); see the module docstring."""

    def check(self) -> None:
        """Cross-field consistency checks; raise :class:`InputError` naming the keys. Override."""

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON-able).

        Example:
            >>> from dataclasses import dataclass
            >>> @dataclass
            ... class A(Config):
            ...     x: int = option(1, "x")
            >>> A().to_dict()
            {'x': 1}
        """
        return dataclasses.asdict(self)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------ types
def _hints(cls: type) -> dict[str, Any]:
    # Resolve annotations in each defining module only: a field named like a builtin (``list``) must not
    # shadow the builtin in its neighbours' annotations.
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = vars(sys.modules[klass.__module__]) if klass.__module__ in sys.modules else {}
        for name, ann in vars(klass).get("__annotations__", {}).items():
            out[name] = eval(ann, dict(module), {}) if isinstance(ann, str) else ann  # noqa: S307
    return out


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    """A short human name for a field type (``int``, ``list of str``, ``one of a, b``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = list(dict.fromkeys(type_name(a) for a in args if a is not type(None)))
        parts = [p.removesuffix(" or null") for p in parts]
        text = " or ".join(dict.fromkeys(parts))
        return f"{text} or null" if type(None) in args else text
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): a config never needs them, and nested aliases
    expand exponentially (a 700-byte "billion laughs" file would take gigabytes and minutes)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:  # a key given twice: the first would be dropped without a word
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed in a config; "
                                              "write the value out", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> Any:
    """YAML text parsed safely and without aliases (raises ``yaml.YAMLError``).

    Example:
        >>> load_yaml_text("a: 1")
        {'a': 1}
        >>> load_yaml_text("a: &x [1]\\nb: *x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        yaml.composer.ComposerError: aliases (*x) are not allowed in a config; write the value out
        ...
    """
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply for a config") from None


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about values of any size.

    Example:
        >>> shown(list(range(100)), 40)
        '[0, 1, 2, 3, 4, 5, 6… (390 characters)'
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:max(limit - 20, 10)]}… ({len(text)} characters)"


class _Reject(Exception):
    """A value that does not fit a type (internal; turned into an InputError with its location)."""


def _convert(value: Any, tp: Any, meta: dict | None = None) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and (int in args or float in args)
        for a in args:
            if a is type(None) or (a is str and numeric):  # a number that fails as a number is not text
                continue
            try:
                return _convert(value, a, meta)
            except _Reject as e:
                errors.append(str(e))
        if len(errors) == 1 or numeric:  # one candidate, or a number: its own message is the clearest
            raise _Reject(errors[-1])
        raise _Reject(f"expected {type_name(tp)}, got {shown(value)}")
    if origin is Literal:
        if value not in args:
            raise _Reject(f"expected one of {', '.join(map(str, args))}, got {shown(value)}")
        return value
    if origin is list:
        if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            raise _Reject(f"expected a list, got {shown(value)}")
        return [_convert(v, args[0], meta) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Reject(f"expected a mapping, got {shown(value)}")
        return {_convert(k, args[0]): _convert(v, args[1], meta) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _Reject(f"expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Reject(f"expected an integer, got {shown(value)}")
        return _in_range(value, meta)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                raise _Reject(f"expected a number, got {shown(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Reject(f"expected a number, got {shown(value)}")
        if not math.isfinite(value):
            raise _Reject(f"expected a finite number, got {shown(value)}")
        return _in_range(float(value), meta)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _Reject(f"expected a string, got {shown(value)}")
        if "\x00" in value:
            raise _Reject("a string may not hold a NUL character")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # a programming error, not bad input


def _in_range(value: float, meta: dict | None) -> Any:
    if not meta:
        return value
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        raise _Reject(f"must be {'>' if meta.get('min_exclusive') else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise _Reject(f"must be <= {hi}, got {value}")
    return value


# ----------------------------------------------------------------------------------- parsing
def _unknown(key: str, prefix: str, cls: type, where: str) -> InputError:
    names = list(_fields(cls))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid keys: {', '.join(names)})"
    return InputError(f"{where}: unknown key '{prefix}{key}'{hint}")


def _build(cls: type[C], data: Any, where: str, prefix: str = "") -> C:
    """An instance of ``cls`` from a (partial) mapping; missing keys take their defaults."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: '{prefix.rstrip('.') or 'config'}' must be a mapping of keys to values")
    fields, hints = _fields(cls), _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            raise _unknown(str(key), prefix, cls, where)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            value = value if value is not None else {}
            if isinstance(value, dict):  # a section's keys override its own default (which may differ from its class's)
                value = _merge(_section_default(fields[key]), value)
            kwargs[key] = _build(tp, value, where, f"{prefix}{key}.")
            continue
        try:
            kwargs[key] = _convert(value, tp, dict(fields[key].metadata))
        except _Reject as e:
            raise InputError(f"{where}: {prefix}{key}: {e}") from None
    return cls(**kwargs)


def _section_default(field: dataclasses.Field) -> dict:
    """The default of a nested section as a plain mapping (``{}`` when it has none)."""
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = field.default_factory()  # type: ignore[misc]
        return default.to_dict() if isinstance(default, Config) else {}
    return {}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls: type[C], data: dict, where: str = "config") -> C:
    """A checked ``cls`` from a nested mapping (unknown keys and bad values are errors naming ``where``).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class A(Config):
        ...     n: int = option(1, "n", min=1)
        >>> from_dict(A, {"n": 0})
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: config: n: must be >= 1, got 0
    """
    cfg = _build(cls, data, where)
    _check_all(cfg, where)
    return cfg


def _check_all(cfg: Config, where: str) -> None:
    try:
        _check_tree(cfg)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _check_tree(cfg: Config, path: str = "") -> None:
    """Every section's checks, innermost first. A config embedded whole in another (``embedded``, e.g. the study's
    ``rl.train``) names keys from its own root, so its errors say which section they are about."""
    if getattr(cfg, "enabled", True) is False:  # a section switched off is not used, so not checked
        return
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if not isinstance(value, Config):
            continue
        if f.metadata.get("embedded"):
            try:
                _check_tree(value)
            except InputError as e:
                raise InputError(f"{path}{f.name}: {e}") from None
        else:
            _check_tree(value, f"{path}{f.name}.")
    cfg.check()


def _override(cls: type, data: dict, item: str) -> dict:
    """``data`` with the override ``key.sub=value`` applied, the key and value checked against ``cls``."""
    where = f"--set {item if len(item) <= 80 else item[:60] + f'… ({len(item)} characters)'}"
    dotted, sep, text = item.partition("=")
    if not sep or not dotted:
        raise InputError(f"{where}: expected KEY=VALUE (e.g. --set lr=1e-4)")
    try:
        value = load_yaml_text(text) if text.strip() else None
    except yaml.composer.ComposerError as e:
        raise InputError(f"{where}: {e.problem}") from None
    except yaml.YAMLError:
        value = text
    parts = dotted.split(".")
    node_cls, prefix = cls, ""
    for i, part in enumerate(parts):
        fields = _fields(node_cls)
        if part not in fields:
            raise _unknown(part, prefix, node_cls, where)
        tp = _hints(node_cls)[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(tp):
            if last:
                _build(tp, value if value is not None else {}, where, f"{prefix}{part}.")
            node_cls, prefix = tp, f"{prefix}{part}."
        elif not last:
            raise InputError(f"{where}: '{prefix}{part}' is a value, not a section")
        else:
            try:
                value = _convert(value, tp, dict(fields[part].metadata))
            except _Reject as e:
                raise InputError(f"{where}: {prefix}{part}: {e}") from None
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return _merge(data, nested)


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path``; problems are one-line errors naming the file (and line).

    Example:
        >>> read_yaml("/nonexistent.yaml")
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /nonexistent.yaml: config file not found
    """
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():  # a device or a pipe: never read (it may never end)
        raise InputError(f"{p}: not a regular file, expected a YAML config file")
    try:
        data = load_yaml_text(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder, expected a YAML config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read config file ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or (str(e) if type(e) is yaml.YAMLError else "syntax error")
        raise InputError(f"{p}{where}: malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: a config must be a mapping of keys to values")
    return data


def load_config(cls: type[C], path: str | os.PathLike | None = None, overrides: Sequence[str] | None = None) -> C:
    """The typed config: defaults, then the YAML file, then each ``--set`` override.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class A(Config):
        ...     lr: float = option(0.1, "lr")
        >>> load_config(A, None, ["lr=abc"])
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: --set lr=abc: lr: expected a number, got 'abc'
    """
    data: dict = {}
    where = "config"
    if path is not None:
        where = str(path)
        data = read_yaml(path)
        _build(cls, data, where)  # errors name the file
    for item in overrides or []:
        data = _override(cls, data, item)
    if overrides:
        where = f"{where} with --set {' '.join(overrides)}" if path is not None else f"--set {' '.join(overrides)}"
    return from_dict(cls, data, where)


# ---------------------------------------------------------------------------------- describe
def describe(cls: type) -> Iterator[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, help)`` for every leaf key of a config class."""
    instance = cls()
    yield from _describe(cls, instance, "")


def _describe(cls: type, instance: Any, prefix: str) -> Iterator[tuple[str, str, Any, str]]:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            yield from _describe(tp, value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", type_name(tp), value, f.metadata.get("help", "")


def render_yaml(cls: type, title: str, instance: Any = None) -> str:
    """Every key of ``cls`` as commented YAML (defaults as values, help as comments): a valid config file.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class A(Config):
        ...     lr: float = option(0.1, "learning rate")
        >>> print(render_yaml(A, "demo"), end="")
        # demo
        lr: 0.1  # float. learning rate
    """
    lines = [f"# {title}"]
    _render(cls, instance if instance is not None else cls(), 0, lines)
    return "\n".join(lines) + "\n"


def _render(cls: type, instance: Any, depth: int, lines: list[str]) -> None:
    hints = _hints(cls)
    pad = "  " * depth
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(instance, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{pad}{f.name}:  # {help_text}")
            _render(tp, value, depth + 1, lines)
            continue
        # safe_dump ends a bare scalar with a document-end marker ("0.1\n...\n"): drop it.
        shown = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
        lines.append(f"{pad}{f.name}: {shown}  # {type_name(tp)}. {help_text}")


def mutable_keys(cls: type, prefix: str = "") -> set[str]:
    """Dotted keys a resumed run may change (fields declared with ``mutable_on_resume=True``)."""
    out: set[str] = set()
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if f.metadata.get("mutable_on_resume"):
                out.add(f"{prefix}{f.name}")
            if not f.metadata.get("frozen_on_resume"):
                out |= mutable_keys(tp, f"{prefix}{f.name}.")
        elif f.metadata.get("mutable_on_resume"):
            out.add(f"{prefix}{f.name}")
    return out


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Example:
        >>> flatten({"a": {"b": 1}, "c": 2})
        {'a.b': 1, 'c': 2}
    """
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(cls: type, saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between a saved and the current config, ignoring resume-mutable keys.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class A(Config):
        ...     lr: float = option(0.1, "lr")
        ...     epochs: int = option(1, "epochs", mutable_on_resume=True)
        >>> config_differences(A, {"lr": 0.1, "epochs": 1}, {"lr": 0.2, "epochs": 5})
        ['lr: 0.1 -> 0.2']
    """
    mutable = mutable_keys(cls)
    a, b = flatten(saved), flatten(current)
    defaults = flatten(cls().to_dict()) if dataclasses.is_dataclass(cls) else {}
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == m or key.startswith(m + ".") for m in mutable):
            continue
        if key not in a and key in defaults and b.get(key) == defaults[key]:
            continue  # a key added to the config since the run started, at its default: same run
        if a.get(key) != b.get(key):
            out.append(f"{key}: {shown(a.get(key))} -> {shown(b.get(key))}")
    return out
