"""shapes-perceive: a reward whose structure is known by construction; shapes-pref's trainer."""

import json

import numpy as np
import torch

from textnorm_t2i.objectives.factory import build_reward
from textnorm_t2i.rewards.perceive import PerceiveReward, PerceptionNoise, build_perceive, look, perceive
from textnorm_t2i.world.scene import render


def test_clean_perception_prefers_the_true_prompt_over_every_near_miss():
    from textnorm_t2i.analysis.diagnose import perturbations
    from textnorm_t2i.world.grammar import parse

    reward = build_reward("shapes-perceive-clean")
    for i, prompt in enumerate(["three red circles", "a blue square and two yellow triangles",
                                "a green circle to the left of a red square"]):
        img = render(prompt, seed=i)
        misses = [m.to_prompt() for ms in perturbations(parse(prompt)).values() for m in ms]
        scores = reward.score_sets([img], [[prompt, *misses]])[0]
        assert bool((scores[0] > scores[1:]).all()), prompt


def test_the_look_term_is_prompt_independent_and_weighted():
    img = render("two red circles", seed=3)
    arr = np.asarray(img)
    plain, looks = PerceiveReward(w=0.0), PerceiveReward(w=2.0)
    prompts = ["two red circles", "a blue square", "four triangles"]
    diff = looks([img] * 3, prompts) - plain([img] * 3, prompts)
    torch.testing.assert_close(diff, torch.full((3,), 2.0 * look(arr)))
    assert look(arr) > 0


def test_perception_noise_is_seeded_per_image():
    img = np.asarray(render("a red circle and a blue square and a green triangle", seed=1))
    noise = PerceptionNoise(count=0.5, color=0.5, shape=0.5, relation=0.5, miss_small=0.5, seed=3)
    assert perceive(img, noise) == perceive(img, noise)  # the same image is perceived the same way
    scenes = {tuple(perceive(img, PerceptionNoise(color=0.9, seed=s))) for s in range(8)}
    assert len(scenes) > 1  # other seeds, other errors
    reward = build_perceive("shapes-perceive-noisy", seed=5, w=0.0)
    assert reward.noise.seed == 5 and reward.noise.count == 0.15 and reward.w == 0.0


def test_pref_trainer_runs_and_writes_a_loadable_reward(tmp_path):
    from textnorm_t2i.rewards.registry import load_reward
    from textnorm_t2i.rewards.train_config import PrefTrainConfig
    from textnorm_t2i.rewards.train_pref import train_pref_reward

    cfg = PrefTrainConfig(prompts_per_subset=1, samples_per_prompt=3, sampling_steps=2, steps=4, eval_every=2,
                          batch_size=4, holdout=0.34)
    out = train_pref_reward(cfg, tmp_path / "pref", progress=False)
    summary = json.loads((out / "data.json").read_text())
    assert summary["comparisons"] == 3 * 3 and summary["flip"] == 0.1
    assert not (out / ".lock").exists()
    from textnorm_t2i.rundir import clearable_entries

    assert clearable_entries(out, "reward")  # all it wrote is declared (--overwrite may clear it)
    reward = load_reward("shapes-clip-a", str(out))
    assert reward.name == "shapes-pref" and reward(torch.rand(1, 3, 32, 32), ["a red circle"]).shape == (1,)
