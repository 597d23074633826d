"""The RL smoke run of the issue: the embedded generator, an embedded proxy reward, configs/rl-smoke.yaml."""

import csv
from pathlib import Path

import pytest

from textnorm_t2i.finetune.config import load_finetune_config
from textnorm_t2i.finetune.rl import run_rl
from textnorm_t2i.trainers import WORLD

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_rl_smoke_raises_the_optimised_reward(tmp_path):
    cfg = load_finetune_config("rl", ROOT / "configs" / "rl-smoke.yaml", [f"out={tmp_path / 'rl-smoke'}"])
    out = run_rl(cfg, progress=False, truth=WORLD)
    with (out / "eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    objective = [float(r["objective"]) for r in rows]
    assert objective[-1] > objective[0], objective
    assert (out / "grids" / "step_00004.png").exists() and (out / "lora" / "adapter_model.safetensors").exists()
    assert 0.0 <= float(rows[-1]["gold_alignment"]) <= 1.0 and float(rows[-1]["drift"]) > 0.0
