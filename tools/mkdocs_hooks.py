"""MkDocs hook (``hooks:`` in mkdocs.yml): Markdown as GitHub renders it, for Python-Markdown.

The README and the pages are written as GitHub renders Markdown: a list may start right after a paragraph line
and a nested list is indented by 2 spaces. Python-Markdown, which MkDocs uses, needs a blank line before a list
and 4 spaces per nesting level, or it runs the list into the paragraph. The text of a generated block (see
``tools/readme_check.py``) cannot be edited by hand, so the pages are adapted here, when the site is built, and
their sources stay as they are.
"""

from __future__ import annotations

import re

ITEM = re.compile(r"^( *)(?:[-*+]|\d+[.)]) ")


def adapt(markdown: str) -> str:
    """``markdown`` with a blank line before every list that follows a paragraph line, and list items indented
    twice as deep (code fences are left alone).

    Example:
        >>> adapt("Per objective:\\n- a\\n  - b\\n  more of b\\n\\n- c\\n")
        'Per objective:\\n\\n- a\\n    - b\\n  more of b\\n\\n- c\\n'
    """
    out: list[str] = []
    fence, in_list, previous = False, False, ""
    for line in markdown.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        item = None if fence else ITEM.match(line)
        if item:
            if previous.strip() and not in_list:
                out.append("")
            indent = len(item.group(1))
            line = " " * (2 * indent) + line[indent:]
            in_list = True
        elif not line.strip():
            in_list = False
        out.append(line)
        previous = line
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: object) -> str:
    """MkDocs event: each page's Markdown before it is rendered."""
    return adapt(markdown)
