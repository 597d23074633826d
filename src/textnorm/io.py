"""Small file helpers shared by every module: atomic writes and JSON loading with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from textnorm.errors import InputError


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` and rename it onto ``path`` only on success.

    A crash or an exception inside the ``with`` block leaves no partial output behind.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_write(target) as f:
        ...     _ = f.write("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding=encoding if text else None, newline=newline if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> write_text_atomic(p, "{}")
        >>> p.read_text()
        '{}'
    """
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> write_json_atomic(p, {"a": 1}, indent=None)
        >>> p.read_text()
        '{"a": 1}\\n'
    """
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content; a missing or unreadable file is a one-line :class:`InputError`.

    Example:
        >>> read_text("/nonexistent.txt")
        Traceback (most recent call last):
        ...
        textnorm.errors.InputError: /nonexistent.txt: file not found
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read file: {e}") from None


def iter_jsonl(path: str | os.PathLike, text: str, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of JSONL ``text`` read from ``path``.

    Every line must be a JSON object holding the ``required`` keys; otherwise an :class:`InputError`
    names the file and line.

    Example:
        >>> list(iter_jsonl("f.jsonl", '{"a": 1}\\n\\n{"a": 2}\\n', required=("a",)))
        [(1, {'a': 1}), (3, {'a': 2})]
    """
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: malformed JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object with keys {', '.join(required)}")
        absent = [c for c in required if c not in row]
        if absent:
            raise InputError(f"{path}:{lineno}: missing key(s) {', '.join(absent)}")
        yield lineno, row


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning I/O and syntax problems into a one-line :class:`InputError`.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text('[1, 2]')
        >>> read_json(p)
        [1, 2]
    """
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
