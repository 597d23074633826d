"""User-facing errors.

Every problem with user input raises :class:`InputError` with a one-line message that names the
file, line or key at fault. The CLI prints it on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a one-line message naming what is wrong and where.

    Example:
        >>> raise InputError("scores.csv:3: score is not a number: 'abc'")
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: scores.csv:3: score is not a number: 'abc'
    """
