"""What every command group shares: the parser class, argument types and the output helpers."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import check_writable, write_text_atomic


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``textnorm: error: ...``, exit code 2) and the defaults in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        print(f"textnorm: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where there is a default worth showing: not for flags, not for None, and not
    where the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text:
            return text
        return super()._get_help_string(action) or ""


class KeysHelp(argparse.RawDescriptionHelpFormatter, DefaultsHelp):
    """A description kept as written (a list of config keys) and the defaults in the help."""


def add_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command group (``textnorm NAME ...``) and the sub-parsers of its commands."""
    group = sub.add_parser(name, help=help)
    return group.add_subparsers(dest=f"{name}_command", required=True, parser_class=Parser)


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi].

    Example:
        >>> int_in(1, 10)("3")
        3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}" if hi is not None
                                             else f"must be >= {lo}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float | None = None, lo_exclusive: bool = False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi]).

    Example:
        >>> float_in(0, lo_exclusive=True)("0.5")
        0.5
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < lo or (lo_exclusive and value == lo) or (hi is not None and value > hi):
            bound = f"> {lo}" if lo_exclusive else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and <= {hi}' if hi is not None else ''}, "
                                             f"got {value}")
        return value

    parse.__name__ = "number"
    return parse


def check_output(output: str | None, *inputs: str | None) -> None:
    """Fail before any work when ``-o`` cannot be written, or is one of the command's input files (the output
    would replace what the command reads)."""
    if output:
        target = check_writable(output)
        for given in inputs:
            if given and target.exists() and Path(given).exists() and target.samefile(given):
                raise InputError(f"{output}: is also an input ({given}); write the output to another file")


def emit(text: str, output: str | None) -> None:
    """Print ``text``; with ``-o`` also write it atomically to the file."""
    if output:
        write_text_atomic(output, text)
    sys.stdout.write(text)


def write_jsonl(path: str, rows: list[dict]) -> None:
    """Rows as JSON lines, written atomically."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def add_benchmark(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", metavar="DIR", default=None,
                   help="benchmark folder laid out like TIA2 (default: the shipped TIA2 annotations)")


def add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    p.add_argument("-o", "--output", metavar="OUT", help="also write the output to this file (atomically)")


def add_reward(p: argparse.ArgumentParser, textnorm: bool = True) -> None:
    """The reward options of the scoring commands (``NAME[=PATH]``, loader arguments, TextNorm)."""
    p.add_argument("--reward", required=True, metavar="NAME[=PATH]", help="registered reward, optional local path")
    p.add_argument("--reward-arg", action="append", metavar="KEY=VALUE", help="extra reward option (repeatable)")
    if textnorm:
        p.add_argument("--textnorm", action="store_true", help="normalise the reward over contrastive prompts")
        p.add_argument("--prompt-sets", metavar="FILE", help="contrastive sets: JSON file, tia2[:subset] or rules")
        p.add_argument("--temperature", type=float_in(0, lo_exclusive=True), default=1.0,
                       help="TextNorm softmax temperature")
        p.add_argument("--scaling", choices=("none", "minmax"), default="none", help="scale each set first")
    p.add_argument("--skip-unreadable", action="store_true", help="skip unreadable images (reported)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="scores JSONL to write")


def add_run_options(p: argparse.ArgumentParser, what: str = "config value") -> None:
    """``--set`` and ``--print-config``, as every config-driven command has them."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override a {what} (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print every config key with its default and help")
