"""Scoring under `accelerate launch` with 2 CPU processes: the same bytes as one process, in the same order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from processes import accelerate_launch

pytestmark = pytest.mark.slow  # every test starts processes

SHAPES = Path(__file__).resolve().parents[1] / "src" / "textnorm_t2i" / "data" / "benchmarks" / "shapes"


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def _textnorm() -> str:
    return shutil.which("textnorm", path=str(Path(sys.executable).parent)) or "textnorm"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    images = sorted((SHAPES / "images" / "counting").glob("*.png"))[:600]
    lines = [json.dumps({"image": str(p), "prompt": f"{['one', 'two', 'three'][i % 3]} red circles"})
             for i, p in enumerate(images)]
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "m.jsonl"


def _launch(args, out, processes):
    cmd = [*accelerate_launch(processes), "-m", "textnorm_t2i.cli", *args, "-o", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(scored by {processes} processes)" in done.stderr, done.stderr[-2000:]
    return out.read_bytes()


@pytest.mark.parametrize("command", ["score", "tia2"])
def test_two_processes_write_the_same_bytes_as_one(manifest, tmp_path, command):
    if command == "score":
        args = ["score", "--reward", "shapes-clip-a", "--textnorm", "--prompt-sets", "rules", "--manifest",
                str(manifest)]
    else:
        args = ["tia2", "score", "--benchmark", "shapes", "--subset", "counting", "--reward", "shapes-clip-b"]
    one = subprocess.run([_textnorm(), *args, "-o", str(tmp_path / "one.jsonl")], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(args, tmp_path / "two.jsonl", 2)
    assert two == (tmp_path / "one.jsonl").read_bytes()
    assert len(two.splitlines()) >= 600


def test_study_pool_and_scores_sharded_over_two_processes_equal_one(tmp_path):
    """The study's sharded stages (pool generation, scoring by every objective and the oracle) under `accelerate
    launch` with 2 processes write the same files, byte for byte, as one process."""
    from test_study import TINY_TWO_REWARDS

    (tmp_path / "study.yaml").write_text(TINY_TWO_REWARDS)
    stages = ["--only", "prompts", "temperatures", "pool", "scores"]

    def files(work):
        return {p.relative_to(work).as_posix(): p.read_bytes() for p in sorted(work.rglob("*.safetensors"))}

    args = ["study", "run", "--config", str(tmp_path / "study.yaml"), *stages]
    one = subprocess.run([_textnorm(), *args, "--set", f"work={tmp_path / 'one'}", "--set", f"out={tmp_path / 'o1'}"],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = [*accelerate_launch(2), "-m", "textnorm_t2i.cli", *args, "--set", f"work={tmp_path / 'two'}", "--set",
           f"out={tmp_path / 'o2'}"]
    two = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "(2 processes)" in two.stdout and "stages prompts, temperatures, pool, scores done" in two.stderr
    a, b = files(tmp_path / "one"), files(tmp_path / "two")
    assert "stages/pool_scores.safetensors" in a and len(a) > 2
    assert a == b
    for name in ("prompts", "temperatures", "pool", "scores"):
        assert (tmp_path / "one" / "stages" / f"{name}.json").read_text() == \
            (tmp_path / "two" / "stages" / f"{name}.json").read_text()

    # The other stages do not shard: asking for them under accelerate launch is one clear line, nothing run.
    cmd[-4:] = ["--set", f"work={tmp_path / 'three'}", "--set", f"out={tmp_path / 'o3'}"]
    bad = subprocess.run(cmd[:cmd.index("--only")] + ["--only", "sft"] + cmd[cmd.index("--only") + 5:], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    # Each process prints the one line, unless the launcher stops it first when the other one has exited (the
    # launcher then adds its own report of the failed processes).
    ours = [line for line in bad.stderr.splitlines() if "the study runs only the stages that shard" in line]
    assert 1 <= len(ours) <= 2, bad.stderr[-3000:]
    assert all(line.startswith("textnorm: error: under accelerate launch") for line in ours), ours
    assert not (tmp_path / "three").exists()
