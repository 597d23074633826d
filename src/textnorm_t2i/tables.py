"""Tables as Markdown, HTML, CSV or boxed terminal text, for the result tables of the benchmark, the diagnosis and
the study (a few one-off listings, such as ``tia2 info``, print their own columns).

A table is a header and rows of already formatted cells; the first ``text_columns`` columns are text (left
aligned), the rest numbers (right aligned).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

Rows = Sequence[Sequence[str]]


def markdown(header: Sequence[str], rows: Rows, text_columns: int = 1) -> str:
    """A Markdown table (no trailing newline).

    Example:
        >>> print(markdown(["reward", "AUROC"], [["clip", "0.61"]]))
        | reward | AUROC |
        |---|---:|
        | clip | 0.61 |
    """
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
                      *("| " + " | ".join(r) + " |" for r in rows)])


def html(header: Sequence[str], rows: Rows, caption: str = "") -> str:
    """An HTML table; cells and caption are inserted as they are (markup; callers escape plain text).

    Example:
        >>> html(["a"], [["1"]])
        '<table><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>'
    """
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """CSV with a header line (``None`` cells empty).

    Example:
        >>> csv_text(["a", "b"], [[1, None]])
        'a,b\\n1,\\n'
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if c is None else c for c in r] for r in rows])
    return buf.getvalue()


def terminal(header: Sequence[str], rows: Rows, text_columns: int = 1, title: str | None = None,
             group_column: int | None = None) -> str:
    """A boxed, aligned terminal table (no trailing newline); with ``group_column``, a rule wherever that column's
    value changes, and the repeated value left blank.

    Example:
        >>> print(terminal(["reward", "AUROC"], [["clip", "0.61"]]))
        ┌────────┬───────┐
        │ reward │ AUROC │
        ├────────┼───────┤
        │ clip   │  0.61 │
        └────────┴───────┘
    """
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "│ " + " │ ".join(parts) + " │"

    def rule(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    out = [title] if title else []
    out += [rule("┌", "┬", "┐"), line(header), rule("├", "┼", "┤")]
    previous = None
    for r in rows:
        key = r[group_column] if group_column is not None else None
        if group_column is not None and previous is not None and key != previous:
            out.append(rule("├", "┼", "┤"))
        same = group_column is not None and key == previous
        out.append(line([("" if same and i == group_column else c) for i, c in enumerate(r)]))
        previous = key
    out.append(rule("└", "┴", "┘"))
    return "\n".join(out)
