"""Trackers through accelerate: csv always, TensorBoard and Weights & Biases (offline) when named."""

from __future__ import annotations

import csv

import pytest

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.config import as_config
from textnorm_t2i.finetune.evaluation import RunLog

ROWS = [{"step": 0, "objective": 1.0, "gold_alignment": 0.25, "tag": "a"},
        {"step": 2, "objective": 1.5, "gold_alignment": float("nan"), "tag": "b"}]


def test_unknown_or_missing_tracker_is_an_error_before_anything_runs(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unknown tracker 'mlflow'"):
        as_config("rl", {"out": str(tmp_path / "r"), "log": {"report_to": ["csv", "mlflow"]}})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(InputError, match=r"wandb is not installed \(pip install 'textnorm-t2i\[wandb\]'"):
        as_config("sft", {"out": str(tmp_path / "s"), "log": {"report_to": ["wandb"]}})
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_csv_and_tensorboard_get_the_same_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path, report_to=["csv", "tensorboard"], config={"lr": 0.1, "reward": {"name": "x"}})
    for row in ROWS:
        log.write(dict(row))
    log.close()
    rows = list(csv.DictReader((tmp_path / "eval.csv").open()))
    assert [r["objective"] for r in rows] == ["1.0", "1.5"]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("objective")] == [(0, 1.0), (2, 1.5)]
    assert [e.step for e in events.Scalars("gold_alignment")] == [0]  # NaN is not logged


@pytest.mark.slow
def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    log = RunLog(tmp_path, report_to=["csv", "wandb"], project="textnorm-test", config={"lr": 0.1})
    for row in ROWS:
        log.write(dict(row))
    log.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert (tmp_path / "eval.csv").is_file()
