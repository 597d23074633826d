"""The shipped TIA2 data and the labelling conventions."""

import numpy as np
import pytest

from textnorm_t2i.bench.evaluate import evaluate_subset, published_table, summarize
from textnorm_t2i.bench.metrics import METRICS
from textnorm_t2i.bench.tia2 import SUBSETS, load_benchmark, load_subset, shipped_tia2_dir
from textnorm_t2i.errors import InputError


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


def test_shipped_files_and_license():
    root = shipped_tia2_dir()
    assert "Apache License" in (root / "LICENSE").read_text()
    assert "kykim0/TextNorm" in (root / "NOTICE").read_text()


def test_sizes(bench):
    assert {k: (len(v.prompts), len(v.images)) for k, v in bench.items()} == {
        "counting": (150, 7500), "composition": (300, 15000), "comprehensive": (100, 5000)}
    assert {k: len(v.evaluated_prompts) for k, v in bench.items()} == {
        "counting": 146, "composition": 295, "comprehensive": 84}
    for s in bench.values():
        assert all(len(v) == 3 for v in s.votes)
        assert all(len(idx) == 50 for idx in s.prompt_images.values())
        assert set(s.prompt_sets) == set(s.prompts)


@pytest.mark.parametrize("name", SUBSETS)
def test_aligned_rule_reproduces_published_human_fraction(bench, name):
    s = bench[name]
    assert set(s.published) == set(s.evaluated_prompts)
    for prompt, entry in s.published.items():
        assert s.aligned_fraction(prompt) == pytest.approx(entry["human"], abs=1e-12), prompt


def test_unsure_vote_is_not_yes():
    s = load_subset("composition")
    i = next(i for i, v in enumerate(s.votes) if sorted(v) == [-1, 1, 1])
    j = next(i for i, v in enumerate(s.votes) if sorted(v) == [-1, 0, 1])
    assert s.aligned[i] and not s.aligned[j]
    assert s.human_score[j] == pytest.approx(1 / 3)


def test_published_table_is_mean_of_per_prompt_scores(bench):
    for s in bench.values():
        table = published_table(s)
        for model, row in table.items():
            vals = [e[model] for e in s.published.values()]
            assert row["n_prompts"] == len(vals)
            for m in METRICS:
                assert row[m] == pytest.approx(float(np.mean([v[m] for v in vals])), rel=0, abs=1e-15)
                low, high = row["ci"][m]
                assert low <= row[m] <= high


def test_perfect_and_reversed_scores():
    s = load_subset("counting")
    perfect = {img: float(a) + 0.1 * h for img, a, h in zip(s.images, s.aligned, s.human_score)}
    res = evaluate_subset(s, perfect)
    assert np.all(res.values["auroc"] == 1.0) and np.all(res.values["auprc"] == 1.0)
    reverse = evaluate_subset(s, {k: -v for k, v in perfect.items()})
    assert np.all(reverse.values["auroc"] == 0.0)
    assert np.all(reverse.values["spearman"] < 0)


def test_missing_scores():
    s = load_subset("counting")
    scores = {img: 0.0 for img in s.images}
    del scores[s.images[s.prompt_images[s.evaluated_prompts[0]][0]]]
    with pytest.raises(InputError, match="have no score"):
        evaluate_subset(s, scores)
    res = evaluate_subset(s, scores, allow_missing=True)
    assert len(res.dropped_images) == 1 and len(res.prompts) == 146


def test_bootstrap_is_seeded_and_covers_mean():
    rng = np.random.default_rng(1)
    v = {"auroc": rng.random(100)}
    a, b = summarize(v), summarize(v)
    assert a == b
    low, high = a["ci"]["auroc"]
    assert low < a["auroc"] < high and high - low < 0.2


def test_unknown_subset_and_bad_benchmark(tmp_path):
    with pytest.raises(InputError, match="unknown subset"):
        load_subset("nope")
    with pytest.raises(InputError, match="not a benchmark folder"):
        load_subset("counting", benchmark=tmp_path)
