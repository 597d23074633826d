"""Every generated block of the README equals what its command prints.

A block is written in the README as

    <!-- generated: textnorm tia2 table --published --format markdown -->
    ...the command's output...
    <!-- end generated -->

`python tools/readme_check.py` runs each block's command (the ``textnorm`` CLI, in this process) and
reports every block whose text differs; `--update` rewrites those blocks. `--only WORD` checks the
blocks whose command contains WORD. `make readme-check` runs it; `tests/test_readme.py` runs the cheap
blocks in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import re
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (?P<cmd>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def blocks(text: str) -> list[re.Match]:
    """The generated blocks of a README text, in order."""
    return list(BLOCK.finditer(text))


def run(command: str) -> str:
    """What ``command`` (a ``textnorm ...`` command line) prints on stdout."""
    from textnorm_t2i.cli import main

    argv = shlex.split(command)
    if argv[0] != "textnorm":
        raise SystemExit(f"readme-check: only textnorm commands can generate README blocks, not {command!r}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.chdir(ROOT):  # README paths are relative to the repository
        rc = main(argv[1:])
    if rc:
        raise SystemExit(f"readme-check: {command!r} exited with {rc}")
    return out.getvalue()


def check(readme: Path, update: bool = False, only: str | None = None) -> list[str]:
    """The commands whose blocks differ (after rewriting them when ``update``)."""
    text = readme.read_text()
    stale, new, last = [], [], 0
    for m in blocks(text):
        cmd, body = m.group("cmd"), m.group("body")
        new.append(text[last:m.start("body")])
        last = m.end("body")
        if only and only not in cmd:
            new.append(body)
            continue
        t0 = time.time()
        fresh = run(cmd)
        print(f"readme-check: {cmd} ({time.time() - t0:.0f} s)", file=sys.stderr)
        if fresh.strip() != body.strip():
            stale.append(cmd)
            sys.stderr.writelines(difflib.unified_diff(body.splitlines(True), fresh.splitlines(True), "README",
                                                       cmd, n=0))
        new.append(fresh if fresh.endswith("\n") else fresh + "\n")
    new.append(text[last:])
    if update and stale:
        readme.write_text("".join(new))
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the blocks that differ")
    parser.add_argument("--only", help="check only the blocks whose command contains this")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    stale = check(args.readme, args.update, args.only)
    if stale and not args.update:
        print(f"readme-check: {len(stale)} block(s) differ from their command: {stale} "
              "(make readme-update rewrites them)", file=sys.stderr)
        return 1
    print(f"readme-check: {'updated ' + str(len(stale)) if stale else 'all'} generated block(s) "
          f"{'' if stale else 'match their commands'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
