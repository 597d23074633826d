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


# Blocks that run reward models over the benchmark take seconds each: they are in the slow tier.
@pytest.mark.parametrize("command", [
    pytest.param(c, marks=[pytest.mark.slow] if c.startswith(readme_check.TOLERANT_BLOCKS) else [], id=f"block{i}")
    for i, c in enumerate(BLOCKS)])
def test_readme_block_equals_its_command(command, capsys):
    text = (ROOT / "README.md").read_text()
    body = next(m.group("body") for m in readme_check.blocks(text) if m.group("cmd") == command)
    fresh = readme_check.run(command)
    assert readme_check.block_matches(command, body, fresh), f"README block of `{command}` is stale: " \
                                                             "run `make readme-update`"


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
    assert {c for c in BLOCKS if c.startswith(readme_check.TOLERANT_BLOCKS)} == \
        {c for c in BLOCKS if "world benchmark table" in c}


def test_a_rerun_record_is_compared_with_its_stated_tolerance():
    committed = readme_check._csv_rows((ROOT / "docs/diagnosis/bon-perceive-clean-raw.csv").read_text())
    moved = [dict(r, gold_alignment=r["gold_alignment"] + 0.004) for r in committed]
    assert readme_check.records_agree(committed, moved)
    assert not readme_check.records_agree(committed, [dict(r, gold_alignment=r["gold_alignment"] + 0.05)
                                                      for r in committed])
    assert not readme_check.records_agree(committed, [dict(r, n=r["n"] + 1) for r in committed])
    assert not readme_check.records_agree(committed, committed[:-1])


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
                                      "docs/benchmarks/textnorm_overhead.json", "docs/benchmarks/rl_throughput.json",
                                      "docs/benchmarks/draft_throughput.json", "docs/draft/clip-a",
                                      "docs/draft/clip-a-tn", "docs/draft/detect", "docs/draft/detect-tn",
                                      "docs/draft/detect-5min", "docs/sft/aligned-guided", "docs/sft/random-guided"}
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
