"""Every script in benchmarks/ runs end to end at tiny settings and prints what it promises, so a broken benchmark
is caught here rather than by the next person who runs ``make bench-*``. (The numbers themselves are measured by
the full-size runs; these settings are too small to mean anything.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processes import environment

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# script, tiny arguments, a line its output must contain. rl_throughput and draft_throughput run our side only:
# trl's side needs a virtual environment of its own (installed from PyPI on the first `make bench-rl`).
def _today() -> list[str]:
    """generator_speed's today side: the issue's filing commit where this clone has it (a shallow clone does not)."""
    filed = "aa5f05d"
    have = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{filed}^{{commit}}"], capture_output=True)
    return ["--today", filed if have.returncode == 0 else "reference"]


SMOKE = [
    ("generator_speed.py", [*_today(), "--batches", "2", "--train-batch", "2", "--sample-prompts", "4", "2",
                            "--repeats", "1", "--min-seconds", "0", "--rounds", "1", "--rl-epochs", "2",
                            "--rl-batch", "4", "--draft-steps", "3"],
     "ratios new / today"),
    ("generator_validity.py", ["--prompts", "2", "--samples", "2", "--steps", "2"], "counting"),
    ("oracle_accuracy.py", ["--prompts", "2"], "worst rate"),
    ("rl_gradient_snr.py", ["--batches", "2", "--prompts", "2", "--per-prompt", "2"], "cosine"),
    ("rl_throughput.py", ["--without-trl", "--epochs", "1", "--batch", "2", "--train-batch", "2", "--steps", "2",
                          "--repeats", "1", "--also"], "samples/s"),
    ("draft_throughput.py", ["--without-trl", "--steps", "1", "--batch", "1", "--denoising", "2", "--k", "1",
                             "--repeats", "1"], "steps/s"),
    ("textnorm_overhead.py", ["--repeats", "1", "--contrastive", "2"], "ratio"),
    ("tia2_eval.py", ["--repeats", "1"], "speed-up"),
]


def test_every_benchmark_has_a_smoke_test():
    assert {s[0] for s in SMOKE} == {p.name for p in (ROOT / "benchmarks").glob("*.py")}


@pytest.mark.parametrize("script,args,expected", SMOKE, ids=[s[0] for s in SMOKE])
def test_benchmark_runs_at_tiny_settings(script, args, expected, tmp_path):
    # Scripts that write a record get one (rl_throughput's record needs trl's side, so it is left out).
    record = '"-o", "--output"' in (ROOT / "benchmarks" / script).read_text() and "--without-trl" not in args
    out = tmp_path / "record.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args, *(["-o", str(out)] if record else [])]
    result = subprocess.run(cmd, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout.lower(), result.stdout[-2000:]
    if record:
        assert isinstance(json.loads(out.read_text()), dict)


@pytest.mark.parametrize("args,named", [
    (["--rounds", "0"], "--rounds"),
    (["--rl-epochs", "1"], "--rl-epochs"),  # the first epoch is left out of the steady state: nothing would remain
    (["--draft-steps", "2"], "--draft-steps"),
    (["--sample-prompts", "256", "3"], "--sample-prompts"),
    (["--rl-batch", "48"], "--rl-batch"),
    (["--batches", "16", "0"], "--batches"),
    (["--min-seconds", "nan"], "--min-seconds"),
    (["--repeats", "many"], "--repeats"),
    (["--output", "{tmp}"], "folder"),
    (["--output", "/proc/r.json"], "/proc/r.json"),
])
def test_generator_speed_refuses_settings_it_cannot_run_before_measuring(args, named, tmp_path):
    # An hour's run must not end in a traceback or fail to write its record: refused at once, in one line.
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "generator_speed.py"), *args]
    result = subprocess.run(cmd, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_generator_speed_refuses_a_revision_it_cannot_read(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "generator_speed.py"), "--today", "no-such-revision", "-o",
           str(tmp_path / "r.json")]
    result = subprocess.run(cmd, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-revision" in result.stderr
    assert not (tmp_path / "r.json").exists()
