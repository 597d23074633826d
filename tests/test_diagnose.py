"""The reward diagnosis against rewards whose offset and contrast are known by construction."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textnorm_t2i.analysis.diagnose import decompose, diagnose, perturbations, reliability
from textnorm_t2i.cli import main
from textnorm_t2i.rewards.base import CallableReward


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-5, 5), min_size=2, max_size=6), min_size=1, max_size=5),
       st.lists(st.floats(-10, 10), min_size=5, max_size=5))
def test_decompose_recovers_a_known_offset_and_contrast(contrasts, offsets):
    """r(x, y') = a(x) + c(x, y'): the offset is a(x) + mean c, the contrast c(x, y) - mean c."""
    sets = [torch.tensor(c, dtype=torch.float64) + a for c, a in zip(contrasts, offsets)]
    out = decompose(sets)
    for i, (c, a) in enumerate(zip(contrasts, offsets)):
        np.testing.assert_allclose(out["offset"][i], a + np.mean(c), atol=1e-9)
        np.testing.assert_allclose(out["contrast"][i], c[0] - np.mean(c), atol=1e-9)
        np.testing.assert_allclose(out["margin"][i], c[0] - max(c[1:]), atol=1e-9)


def test_reliability_matches_a_hand_computation():
    probs = np.array([0.1, 0.15, 0.8, 0.9, 0.95])
    labels = np.array([0, 1, 1, 1, 0])
    out = reliability(probs, labels)
    # bins: [0.1, 0.15] -> conf 0.125, acc 0.5; [0.8] -> 0.8, 1; [0.9, 0.95] -> 0.925, 0.5
    expected = (2 * abs(0.5 - 0.125) + abs(1 - 0.8) + 2 * abs(0.5 - 0.925)) / 5
    assert out["ece"] == pytest.approx(expected)
    assert sum(b["count"] for b in out["bins"]) == 5


def test_perturbations_cover_every_type():
    from textnorm_t2i.world.grammar import parse

    assert {k for k, v in perturbations(parse("two red circles")).items() if v} == {"count", "color", "shape", "added"}
    assert {k for k, v in perturbations(parse("a red circle above a blue square")).items() if v} == {
        "color", "shape", "relation", "dropped"}


def test_a_prompt_independent_reward_has_no_contrast():
    """Brightness ignores the prompt: its contrast is exactly zero, so its contrast AUROC is 0.5 (all ties),
    its offset ranks like the raw reward, and every near miss ties."""
    brightness = CallableReward(lambda images, prompts: torch.as_tensor(
        np.stack([np.asarray(i, dtype=np.float32).mean() for i in images])), name="brightness")
    res = diagnose(brightness, "shapes", ["counting"], clean_per_subset=5)["subsets"]["counting"]
    assert res["auroc"]["contrast"]["mean"] == pytest.approx(0.5)
    assert res["auroc"]["margin"]["mean"] == pytest.approx(0.5)
    assert res["auroc"]["offset"]["mean"] == pytest.approx(res["auroc"]["raw"]["mean"])
    for where in ("clean", "generated"):
        for kind, acc in res["contrastive_accuracy"][where].items():
            assert acc["pairs"] == 0 or acc["accuracy"] == 0.5, (where, kind)


def test_diagnose_cli_on_the_positive_control(tmp_path):
    assert main(["diagnose", "--reward", "shapes-perceive-clean", "--subset", "counting", "--no-perturbations",
                 "--json", "-o", str(tmp_path / "d.json"), "--plot", str(tmp_path / "r.png")]) == 0
    res = json.loads((tmp_path / "d.json").read_text())
    assert res["reward"] == "shapes-perceive-clean"
    row = res["subsets"]["counting"]
    assert row["auroc"]["raw"]["mean"] >= 0.9 and row["auroc"]["contrast"]["mean"] >= 0.9
    assert (tmp_path / "r.png").stat().st_size > 1000
