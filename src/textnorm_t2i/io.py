"""Small file helpers shared by every module: atomic writes and JSON loading with clear errors."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from textnorm_t2i.errors import InputError

MAX_IMAGE_PIXELS = 4096 * 4096  # images above this are refused before they are decoded


def _os_problem(e: OSError) -> str:
    return e.strerror or type(e).__name__


def output_target(path: str | os.PathLike) -> Path:
    """The file an atomic write to ``path`` will replace, after checking that it may be replaced.

    Only a regular file (or nothing) may be replaced: a directory, a device, a pipe or a socket -- or a
    symbolic link to one -- is an :class:`InputError`. A link to a regular file is followed, so the link
    stays and its target gets the new content.

    Example:
        >>> output_target("/dev/null")
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /dev/null: not a regular file (a device); refusing to replace it
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise InputError(f"{path}: cannot write ({_os_problem(e)})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else (
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a pipe or socket")
        raise InputError(f"{path}: not a regular file ({kind}); refusing to replace it")
    return path


def _new_file_mode(existing: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(existing).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` and rename it onto ``path`` only on success.

    A crash or an exception inside the ``with`` block leaves no partial output behind. Only a regular
    file is ever replaced (see :func:`output_target`); the new file gets the old file's permissions, or
    the usual ones (0666 less the umask). An OS error (no permission, read-only or full disk, a parent
    that cannot be created) is a one-line :class:`InputError` naming the path.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_write(target) as f:
        ...     _ = f.write("hello")
        >>> target.read_text()
        'hello'
    """
    path = output_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"{path}: cannot write ({_os_problem(e)})") from None
    try:
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding=encoding if text else None, newline=newline if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _new_file_mode(path))
        output_target(path)  # it may have changed while we wrote
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, InputError):
            raise InputError(f"{path}: cannot write ({_os_problem(e)})") from None
        raise


def check_writable(path: str | os.PathLike) -> Path:
    """Check up front, before any work, that an output file can be written at ``path``.

    Example:
        >>> check_writable("/proc/x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /proc/x: cannot write (...)
    """
    target = output_target(path)
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{target}: cannot write ({parent} is not a folder)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"{target}: cannot write ({_os_problem(e)})") from None
    return target


def open_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """An RGB PIL image, or a one-line :class:`InputError` naming the file (missing, unreadable, too large).

    The size is read from the header first: an image above ``max_pixels`` is refused without decoding it.

    Example:
        >>> open_image("/nonexistent.png")
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /nonexistent.png: image not found
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: a link that leads nowhere (broken or looping)")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise InputError(f"{path}: not a regular file (a device or a pipe), not an image")
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise InputError(f"{path}: image of {img.width}x{img.height} pixels is larger than the limit "
                                 f"of {max_pixels:,} pixels")
            return img.convert("RGB")
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image") from None
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image too large (decompression bomb limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: unreadable image ({type(e).__name__})") from None


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


def file_digest(path: str | os.PathLike, missing_ok: bool = False) -> dict | None:
    """``{"bytes": size, "sha256": hex}`` of a file, to tell later that it is the file that was written (None
    for a missing file with ``missing_ok``).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> _ = p.write_bytes(b"abc")
        >>> file_digest(p)["bytes"], file_digest(p)["sha256"][:8]
        (3, 'ba7816bf')
    """
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            size = f.tell()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    return {"bytes": size, "sha256": h.hexdigest()}


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
        textnorm_t2i.errors.InputError: /nonexistent.txt: file not found
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
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
