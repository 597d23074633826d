"""The README reproduces: its generated blocks equal what their commands print now, and its Python
example runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import readme_check  # noqa: E402

BLOCKS = [m.group("cmd") for m in readme_check.blocks((ROOT / "README.md").read_text())]


def test_the_readme_has_generated_blocks():
    assert any("tia2 table --published" in b for b in BLOCKS)
    assert any("world benchmark table" in b for b in BLOCKS)
    assert any("study summary" in b for b in BLOCKS)


@pytest.mark.parametrize("command", BLOCKS)
def test_readme_block_equals_its_command(command, capsys):
    text = (ROOT / "README.md").read_text()
    body = next(m.group("body") for m in readme_check.blocks(text) if m.group("cmd") == command)
    assert readme_check.run(command).strip() == body.strip(), f"README block of `{command}` is stale: " \
                                                               "run `make readme-update`"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written (in a scratch folder)."""
    import re

    monkeypatch.chdir(tmp_path)
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert code
    for block in code:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def test_readme_counts_the_bad_input_cases():
    import re

    import test_bad_input

    said = re.search(r"`tests/test_bad_input.py` holds (\d+) such cases", (ROOT / "README.md").read_text())
    assert said and int(said.group(1)) == len(test_bad_input.CASES)


def test_readme_quotes_the_numbers_of_its_records():
    """Numbers quoted in prose (generator validity, the positive-control best-of-n, benchmark ratios) equal the
    committed record files they come from."""
    quotes = readme_check.quoted_numbers()
    assert {q[0] for q in quotes} >= {"docs/generator_validity.json", "docs/diagnosis/bon-perceive-clean-*.csv",
                                      "docs/benchmarks/textnorm_overhead.json", "docs/benchmarks/rl_throughput.json"}
    assert readme_check.check_quotes(ROOT / "README.md") == []


def test_a_changed_quote_or_record_is_caught(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    record, quote = readme_check.quoted_numbers()[0]
    changed = quote.replace(quote.split()[2], "99.9%")
    (tmp_path / "README.md").write_text(text.replace(quote.split()[2], "99.9%", 1))
    assert readme_check.check_quotes(tmp_path / "README.md") != [] and changed != quote
    # The record check itself: a command that reproduces its file passes, one that does not is reported.
    render = "textnorm diagnose --from-json docs/diagnosis/embedded.json --json -o {out}"
    monkeypatch.setattr(readme_check, "RECORDS", [("docs/diagnosis/embedded.json", render, ""),
                                                  ("docs/generator_validity.json", render, "")])
    assert readme_check.check_records() == ["docs/generator_validity.json"]
