"""``shapes-detect``: the probability that a predicted parse satisfies a prompt, against the world's own checker
over every parse the prediction allows; lenient prompts; the trained network's labels and its training run."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.rewards.detect import (
    KINDS,
    MAX_COUNT,
    N_COUNTS,
    N_KINDS,
    UNKNOWN,
    DetectReward,
    ParseNet,
    kind_index,
    read_spec,
    spec_log_prob,
)
from textnorm_t2i.world.check import Obj, check
from textnorm_t2i.world.grammar import SUBSETS, parse, sample_spec

CASES = ["two red circles", "three circles", "a red circle and two blue squares", "two squares and a green circle",
         "a red circle to the left of a blue square", "a yellow triangle above a green circle",
         "a blue square below a red square", "a photo of a green triangle to the right of a yellow circle"]


def _random_parse(spec, seed: int):
    """Count distributions where the spec's kinds and one more kind (and "unknown") are uncertain and every other
    kind is surely absent; positions far apart (tiny sigma) so a relation is sure once the objects exist."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.zeros(1, N_KINDS, N_COUNTS)
    probs[..., 0] = 1.0
    kinds = sorted({KINDS.index((c, clause.shape)) for clause in spec.clauses
                    for c in ([clause.color] if clause.color else ["red", "blue"])})
    rest = [k for k in range(len(KINDS)) if k not in kinds]
    uncertain = kinds + [random.Random(seed).choice(rest), UNKNOWN]
    for k in uncertain:
        probs[0, k] = torch.softmax(torch.randn(N_COUNTS, generator=g) * 1.5, dim=0)
    pos = torch.rand(1, len(KINDS), 2, generator=g)
    return probs, pos, torch.full((1, len(KINDS)), 1e-4), uncertain


@pytest.mark.parametrize("prompt", CASES)
def test_the_probability_equals_the_checker_over_every_parse(prompt):
    """Enumerate every joint count of the uncertain kinds, build the objects, ask the world's checker; the sum of
    the probabilities of the parses it calls aligned is the reward's probability (eps -> 0)."""
    spec = parse(prompt)
    probs, pos, sigma, uncertain = _random_parse(spec, seed=len(prompt))
    expected = 0.0
    for counts in itertools.product(range(N_COUNTS), repeat=len(uncertain)):
        p = math.prod(float(probs[0, k, n]) for k, n in zip(uncertain, counts))
        objs = []
        for k, n in zip(uncertain, counts):
            color, shape = KINDS[k] if k != UNKNOWN else ("red", "unknown")
            objs += [Obj(shape, color, tuple(float(v) * 32 for v in pos[0, min(k, len(KINDS) - 1)]))] * n
        if check(spec, objs)[0]:
            expected += p
    got = float(spec_log_prob(spec, probs.clamp_min(1e-30).log(), pos, sigma, eps=1e-12)[0].exp())
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_a_relation_is_the_gaussian_probability_of_the_side():
    probs = torch.zeros(1, N_KINDS, N_COUNTS)
    probs[..., 0] = 1.0
    red, blue = kind_index("red", "circle"), kind_index("blue", "square")
    probs[0, [red, blue]] = torch.tensor([0, 1.0, 0, 0, 0, 0])
    pos = torch.full((1, len(KINDS), 2), 0.5)
    pos[0, red, 0], pos[0, blue, 0] = 0.4, 0.5
    sigma = torch.full((1, len(KINDS)), 0.1)
    got = float(spec_log_prob(parse("a red circle to the left of a blue square"), probs.log(), pos, sigma, 1e-12)[0])
    from scipy.stats import norm

    assert math.exp(got) == pytest.approx(norm.cdf(0.1 / math.sqrt(0.02)), rel=1e-5)


def test_prompts_beyond_the_grammar_are_read_leniently():
    net = ParseNet({"widths": [8, 8, 8], "hidden": 16})
    reward = DetectReward(net, eps=1e-3)
    x = torch.rand(1, 3, 32, 32)
    hybrid, = reward.score(x, ["a red circle-like square"])
    assert float(hybrid) <= math.log(1e-3) + 1e-6  # no world object is a hybrid
    assert read_spec("seven red circles").clauses[0].count == 7
    with pytest.raises(InputError, match="cannot read"):
        reward.score(x, ["a cat"])


def test_score_sets_equal_one_score_per_pair():
    torch.manual_seed(0)
    reward = DetectReward(ParseNet({"widths": [8, 8, 8], "hidden": 16}), batch_size=2)
    x = torch.rand(3, 3, 32, 32)
    sets = [["two red circles", "a red circle"], ["three squares"], ["a blue square above a red circle",
                                                                      "a green triangle"]]
    per_set = reward.score_sets(x, sets)
    for i, ps in enumerate(sets):
        torch.testing.assert_close(per_set[i], reward.score(x[[i] * len(ps)], ps))


def test_counts_beyond_four_fall_in_the_last_class():
    probs = torch.zeros(1, N_KINDS, N_COUNTS)
    probs[..., 0] = 1.0
    probs[0, kind_index("red", "circle")] = torch.tensor([0, 0, 0, 0, 0, 1.0])
    pos, sigma = torch.full((1, len(KINDS), 2), 0.5), torch.ones(1, len(KINDS))
    seven = float(spec_log_prob(read_spec("seven red circles"), probs.log(), pos, sigma)[0])
    assert seven == pytest.approx(0, abs=1e-6) and MAX_COUNT == N_COUNTS - 1


def test_parse_labels_are_the_oracles_parse():
    from textnorm_t2i.rewards.train_detect import parse_labels
    from textnorm_t2i.world.oracle import detect
    from textnorm_t2i.world.scene import draw_scene, sample_scene

    rng = random.Random(3)
    images = np.stack([np.asarray(draw_scene(sample_scene(sample_spec(SUBSETS[i % 3], rng), rng)))
                       for i in range(12)])
    labels = parse_labels(images)
    for arr, counts, has in zip(images, labels["counts"], labels["has_position"]):
        found = detect(arr)
        assert counts.sum() == len(found)
        for o in found:
            assert counts[kind_index(o.color, o.shape)] >= 1
        assert has.sum() == sum(1 for k in range(len(KINDS)) if counts[k] == 1)


def test_detect_config_is_closed(tmp_path):
    from textnorm_t2i.config import from_dict
    from textnorm_t2i.rewards.train_config import DetectTrainConfig

    with pytest.raises(InputError, match="renderz"):
        from_dict(DetectTrainConfig, {"renderz": 10})
    with pytest.raises(InputError, match="model.widths"):
        from_dict(DetectTrainConfig, {"model": {"widths": [6]}})


@pytest.mark.slow
def test_training_writes_a_reward_that_loads_and_scores(tmp_path):
    from textnorm_t2i.rewards.registry import load_reward
    from textnorm_t2i.rewards.train_detect import train_detect_reward

    out = train_detect_reward({"renders": 200, "prompts_per_subset": 2, "samples_per_prompt": 2, "sampling_steps": 2,
                               "steps": 20, "eval_every": 10, "batch_size": 16,
                               "model": {"widths": [8, 8, 8], "hidden": 16}}, tmp_path / "det", progress=False)
    assert {"config.json", "model.safetensors", "train_log.csv", "data.json"} <= {p.name for p in out.iterdir()}
    reward = load_reward("shapes-detect", str(out))
    assert reward.differentiable
    scores = reward.score(torch.rand(2, 3, 32, 32), ["a red circle", "two blue squares"])
    assert scores.shape == (2,) and bool(torch.isfinite(scores).all())
