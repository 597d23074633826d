"""The README and the documentation pages reproduce: their generated blocks equal what their commands print now,
their quoted numbers equal their records, their Python examples run, and the site lists every page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import readme_check  # noqa: E402

FILES = readme_check.documentation_files()
BLOCKS = [(readme_check.shown(path), m.group("cmd")) for path in FILES for m in readme_check.blocks(path.read_text())]
COMMANDS = [cmd for _, cmd in BLOCKS]


def _documentation() -> str:
    """Every checked file's text, one after the other."""
    return "\n".join(path.read_text() for path in FILES)


def test_the_documentation_has_generated_blocks():
    assert FILES[0] == ROOT / "README.md" and ROOT / "docs" / "diagnosis.md" in FILES
    assert any("tia2 table --published" in b for b in COMMANDS)
    assert any("world benchmark table" in b for b in COMMANDS)
    assert any("study summary" in b for b in COMMANDS)


# Blocks that run reward models over the benchmark take seconds each: they are in the slow tier.
@pytest.mark.parametrize(("file", "command"), [
    pytest.param(f, c, marks=[pytest.mark.slow] if c.startswith(readme_check.TOLERANT_BLOCKS) else [],
                 id=f"{Path(f).stem}-block{i}")
    for i, (f, c) in enumerate(BLOCKS)])
def test_block_equals_its_command(file, command, capsys):
    text = (ROOT / file).read_text()
    body = next(m.group("body") for m in readme_check.blocks(text) if m.group("cmd") == command)
    fresh = readme_check.run(command)
    assert readme_check.block_matches(command, body, fresh), f"{file}: block of `{command}` is stale: " \
                                                             "run `make readme-update`"


def test_a_stale_block_is_reported_with_its_file_and_rewritten_in_that_file(tmp_path):
    page = tmp_path / "page.md"
    command = "textnorm tia2 table --published --format markdown"
    page.write_text(f"# A page\n\n<!-- generated: {command} -->\nold\n<!-- end generated -->\n")
    assert readme_check.check(page) == [f"{page}: {command}"] and "old" in page.read_text()
    assert readme_check.check(page, update=True) == [f"{page}: {command}"]
    assert readme_check.check(page) == [] and "| counting | clip |" in page.read_text()


def test_only_model_blocks_are_compared_with_a_tolerance_and_it_is_one_last_digit():
    """A block rendered from committed data must match to the character; a block computed by reward models at
    check time may move by one unit in the last printed digit of a decimal, never more, never in an integer."""
    table = "| counting | shapes-clip-a | 12 | 0.776 [0.741, 0.809] |"
    model = "textnorm world benchmark table --benchmark shapes --format markdown"
    assert readme_check.block_matches(model, table, table.replace("0.776", "0.775"))
    assert readme_check.block_matches(model, table, table.replace("0.809", "0.810"))
    assert not readme_check.block_matches(model, table, table.replace("0.776", "0.774"))
    assert not readme_check.block_matches(model, table, table.replace("| 12 |", "| 13 |"))
    assert not readme_check.block_matches(model, table, table.replace("0.776", "0.78"))
    assert not readme_check.block_matches(model, table, table.replace("counting", "composition"))
    assert not readme_check.block_matches("textnorm tia2 table --published", table, table.replace("0.776", "0.775"))
    assert {c for c in COMMANDS if c.startswith(readme_check.TOLERANT_BLOCKS)} == \
        {c for c in COMMANDS if "world benchmark table" in c}


def test_a_rerun_record_is_compared_with_its_stated_tolerance():
    committed = readme_check._csv_rows((ROOT / "docs/diagnosis/bon-perceive-clean-raw.csv").read_text())
    moved = [dict(r, gold_alignment=r["gold_alignment"] + 0.004) for r in committed]
    assert readme_check.records_agree(committed, moved)
    assert not readme_check.records_agree(committed, [dict(r, gold_alignment=r["gold_alignment"] + 0.05)
                                                      for r in committed])
    assert not readme_check.records_agree(committed, [dict(r, n=r["n"] + 1) for r in committed])
    assert not readme_check.records_agree(committed, committed[:-1])


def test_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README and the pages runs as written (in a scratch folder)."""
    monkeypatch.chdir(tmp_path)
    code = [(path, block) for path in FILES for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S)]
    assert code
    for path, block in code:
        exec(compile(block, readme_check.shown(path), "exec"), {"__name__": "__readme__"})


def test_the_documentation_counts_the_bad_input_cases():
    import test_bad_input

    said = re.findall(r"`tests/test_bad_input.py` holds (\d+) such cases", _documentation())
    assert said and {int(n) for n in said} == {len(test_bad_input.CASES)}


def test_the_documentation_quotes_the_numbers_of_its_records():
    """Numbers quoted in prose (generator validity, the positive-control best-of-n, benchmark ratios) equal the
    committed record files they come from, and the README's headline numbers are in the README itself."""
    quotes = readme_check.quoted_numbers()
    assert {q[0] for q in quotes} >= {"docs/generator_validity.json", "docs/diagnosis/bon-perceive-clean-*.csv",
                                      "docs/benchmarks/textnorm_overhead.json", "docs/benchmarks/rl_throughput.json",
                                      "docs/benchmarks/draft_throughput.json", "docs/draft/clip-a",
                                      "docs/draft/clip-a-tn", "docs/draft/detect", "docs/draft/detect-tn",
                                      "docs/draft/detect-5min", "docs/sft/aligned-guided", "docs/sft/random-guided"}
    assert readme_check.headline_quotes()
    assert readme_check.check_quotes() == []


def test_a_changed_quote_or_record_is_caught(tmp_path, monkeypatch):
    record, quote = readme_check.quoted_numbers()[0]
    quote = " ".join(quote.split())
    home = next(path for path in FILES if quote in " ".join(path.read_text().split()))
    changed = quote.replace(quote.split()[2], "99.9%")
    assert changed != quote
    (tmp_path / home.name).write_text(" ".join(home.read_text().split()).replace(quote, changed))
    assert readme_check.check_quotes([tmp_path / home.name if p == home else p for p in FILES]) == \
        [f"{record}: {quote!r}"]
    # A headline number must be in the README itself: the same text on a page does not count.
    record, headline = readme_check.headline_quotes()[0]
    readme = " ".join((ROOT / "README.md").read_text().split())
    (tmp_path / "README.md").write_text(readme.replace(" ".join(headline.split()), ""))
    (tmp_path / "page.md").write_text(headline)
    others = [p for p in FILES if p.name != "README.md"]
    assert readme_check.check_quotes([tmp_path / "README.md", tmp_path / "page.md", *others]) == \
        [f"README.md: {record}: {headline!r}"]
    # The record check itself: a command that reproduces its file passes, one that does not is reported.
    render = "textnorm diagnose --from-json docs/diagnosis/embedded.json --json -o {out}"
    monkeypatch.setattr(readme_check, "RECORDS", [("docs/diagnosis/embedded.json", render, ""),
                                                  ("docs/generator_validity.json", render, "")])
    assert readme_check.check_records() == ["docs/generator_validity.json"]


def test_the_site_home_is_the_readme_with_relative_links(tmp_path):
    assert readme_check.check_index() == []
    index = tmp_path / "index.md"
    index.write_text("stale")
    assert readme_check.check_index(index=index) != []
    assert readme_check.check_index(update=True, index=index) != [] and readme_check.check_index(index=index) == []
    assert "](docs/" not in index.read_text() and "](tia2.md)" in index.read_text()


def test_the_readme_is_short_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    first = readme.split("```")[1].strip().splitlines()
    assert [line.split()[:2] for line in first] == [["make", "demo"], ["make", "test"]]


def test_every_page_is_in_the_site_nav():
    """Every docs/*.md page is listed in mkdocs.yml's nav, and every nav entry is a page."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs" and config["site_dir"] == "site"

    def pages(nav: list) -> list[str]:
        out = []
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += pages(value) if isinstance(value, list) else [value]
        return out

    listed = pages(config["nav"])
    assert sorted(listed) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert len(set(listed)) == len(listed)


def test_nothing_refers_outside_the_repository():
    """The README and the pages name no file outside the repository (such as a sibling shared/ folder)."""
    for path in FILES:
        assert not re.search(r"\.\./|DESIGN\.md|\bshared/", path.read_text()), readme_check.shown(path)


def test_the_site_hook_turns_github_lists_into_python_markdown_lists():
    """A list right after a paragraph line (as `textnorm study summary` prints) gets its blank line, nested items
    their 4 spaces; code is left alone."""
    import mkdocs_hooks

    page = "Per objective:\n- a\n  - b\n  more of b\n\ntext\n\n```\nx\n  - code\n```\n"
    assert mkdocs_hooks.adapt(page) == "Per objective:\n\n- a\n    - b\n  more of b\n\ntext\n\n```\nx\n  - code\n```\n"
