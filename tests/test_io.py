"""File helpers: atomic writes leave either the old file or the complete new one, never a partial one."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import atomic_write, iter_jsonl, read_json, write_json_atomic, write_text_atomic


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half of it")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write('{"version": 2')
            raise KeyboardInterrupt
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@settings(max_examples=30, deadline=None)
@given(text=st.text())
def test_text_is_written_exactly(tmp_path_factory, text):
    target = tmp_path_factory.mktemp("w") / "t.txt"
    write_text_atomic(target, text)
    assert target.read_bytes() == text.encode("utf-8")


def test_csv_line_ends_survive_with_newline_empty(tmp_path):
    """csv writes its own "\\r\\n"; with newline="" the file holds exactly what csv wrote, like open(newline="")."""
    rows = [{"n": 1, "text": "a\nb"}, {"n": 2, "text": "c"}]
    with atomic_write(tmp_path / "a.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["n", "text"])
        writer.writeheader()
        writer.writerows(rows)
    with open(tmp_path / "b.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["n", "text"])
        writer.writeheader()
        writer.writerows(rows)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    with open(tmp_path / "a.csv", newline="") as f:
        assert [r["text"] for r in csv.DictReader(f)] == ["a\nb", "c"]


def test_binary_mode(tmp_path):
    with atomic_write(tmp_path / "x.bin", "wb") as f:
        f.write(bytes(range(256)))
    assert (tmp_path / "x.bin").read_bytes() == bytes(range(256))


def test_json_round_trip_and_errors_name_the_place(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"a": [1, 2.5, None]})
    assert json.loads((tmp_path / "a.json").read_text()) == read_json(tmp_path / "a.json") == {"a": [1, 2.5, None]}
    (tmp_path / "bad.json").write_text('{\n "a": 1,\n}')
    with pytest.raises(InputError, match=r"bad\.json:3: malformed JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(InputError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")
    with pytest.raises(InputError, match=r"f\.jsonl:2: missing key\(s\) b"):
        list(iter_jsonl("f.jsonl", '{"a": 1, "b": 2}\n{"a": 3}\n', required=("a", "b")))
