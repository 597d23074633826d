"""The Python trainer API: configs checked up front, any callable as the reward, prompts overridden."""

from __future__ import annotations

import pytest
import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.trainers import BestOfN, RLTrainer, SFTTrainer


def test_a_bad_key_fails_when_the_trainer_is_built(tmp_path):
    with pytest.raises(InputError, match="did you mean 'epochs'"):
        RLTrainer({"out": str(tmp_path / "r"), "epoch": 3})
    with pytest.raises(InputError, match="samples_per_prompt"):
        RLTrainer({"out": str(tmp_path / "r"), "samples_per_prompt": 3})
    assert not (tmp_path / "r").exists()


def test_config_from_yaml_object_or_dict_agree(tmp_path):
    (tmp_path / "c.yaml").write_text(f"out: {tmp_path / 's'}\nsteps: 7\n")
    a = SFTTrainer(tmp_path / "c.yaml").config
    b = SFTTrainer({"out": str(tmp_path / "s"), "steps": 7}).config
    c = SFTTrainer(b).config
    assert a.to_dict() == b.to_dict() == c.to_dict() and a.steps == 7


def test_prompts_and_a_callable_reward_replace_the_config(tmp_path):
    trainer = BestOfN({"out": str(tmp_path / "b")}, reward=lambda images, prompts: [len(p) for p in prompts],
                      prompts=["a red circle", "two squares"])
    assert trainer.config.prompts.list == ["a red circle", "two squares"]
    scores = trainer.reward(torch.zeros(2, 3, 4, 4), ["ab", "abcd"])
    assert scores.tolist() == [2.0, 4.0]
    with pytest.raises(InputError, match="not a reward"):
        RLTrainer({"out": str(tmp_path / "r")}, reward=42)


def test_best_of_n_with_a_callable_reward_ranks_by_it(tmp_path):
    """Every score the callable returns is recorded: best-of-1 is their mean, best-of-4 the mean over prompts of
    each prompt's best (4 samples each), so the curve is made from the callable's own numbers."""
    seen: list[tuple[str, float]] = []

    def redness(images, prompts):
        scores = images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))
        seen.extend(zip(prompts, scores.tolist()))
        return scores

    prompts = ["a red circle", "a blue square"]
    out = BestOfN({"out": str(tmp_path / "b"), "n_max": 4, "ns": [1, 4], "sampling": {"steps": 2}},
                  reward=redness, prompts=prompts, progress=False).train()
    import csv

    rows = list(csv.DictReader((out / "bon.csv").open()))
    assert [int(r["n"]) for r in rows] == [1, 4]
    per_prompt = {p: [v for q, v in seen if q == p] for p in prompts}
    assert all(len(v) == 4 for v in per_prompt.values()), seen
    assert float(rows[0]["objective"]) == pytest.approx(sum(v for _, v in seen) / len(seen), abs=1e-6)
    assert float(rows[1]["objective"]) == pytest.approx(sum(max(v) for v in per_prompt.values()) / 2, abs=1e-6)
    assert (out / "report.html").is_file() and (out / "bon_samples.jsonl").is_file()


def test_a_bare_string_is_not_a_list_of_prompts(tmp_path):
    with pytest.raises(InputError, match="not a single string"):
        RLTrainer({"out": str(tmp_path / "r")}, prompts="redcircle")
    assert not (tmp_path / "r").exists()
