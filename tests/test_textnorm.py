"""TextNorm math, ensembles and honest cross-validation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textnorm_t2i.bench.tia2 import load_subset
from textnorm_t2i.calibrate import (
    Ensemble,
    TextNorm,
    combine,
    cross_validate,
    kfold_assignment,
    normalize_sets,
    pad_sets,
    select_hyperparameters,
)
from textnorm_t2i.errors import InputError


def table_reward(table):
    """A reward looked up from {prompt: value}, the same for every image, plus image brightness."""
    def fn(images, prompts):
        return [table[p] + float(images[i].mean()) for i, p in enumerate(prompts)]
    return fn


finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(finite, min_size=2, max_size=8), st.floats(0.05, 20), finite)
def test_equals_direct_softmax_and_is_shift_invariant(values, temperature, shift):
    r = torch.tensor(values, dtype=torch.float64)
    v, m = pad_sets([r])
    # exp(r0/T) / sum exp(r/T), written as 1 / sum exp((r - r0)/T) so that it cannot overflow.
    direct = 1.0 / torch.exp((r - r[0]) / temperature).sum()
    got = normalize_sets(v.double(), m, temperature)[0]
    assert float(got) == pytest.approx(float(direct), rel=1e-6, abs=1e-12)
    shifted = normalize_sets(v.double() + shift, m, temperature)[0]
    assert float(shifted) == pytest.approx(float(got), rel=1e-6, abs=1e-12)


def test_temperature_limits():
    v, m = pad_sets([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 2.0])])
    cold = normalize_sets(v, m, temperature=1e-4)
    assert cold.tolist() == [1.0, 0.0]
    hot = normalize_sets(v, m, temperature=1e6)
    torch.testing.assert_close(hot, torch.full((2,), 1 / 3), atol=1e-5, rtol=0)


def test_minmax_and_padding():
    v, m = pad_sets([torch.tensor([10.0, 0.0]), torch.tensor([5.0, 5.0, 5.0])])
    got = normalize_sets(v, m, temperature=1.0, scaling="minmax")
    assert got[0] == pytest.approx(np.e / (np.e + 1))
    assert got[1] == pytest.approx(1 / 3)  # padding does not count as a prompt


def test_textnorm_reward_drops_duplicates_and_needs_sets():
    table = {"a cat": 2.0, "two cats": 1.0, "a dog": 0.0}
    tn = TextNorm(table_reward(table), {"a cat": ["two cats", "a cat", "a dog", "two cats"]}, temperature=0.5)
    assert tn.candidates("a cat") == ["a cat", "two cats", "a dog"]
    got = tn.score(torch.zeros(1, 3, 2, 2), ["a cat"])
    r = torch.tensor([2.0, 1.0, 0.0]) / 0.5
    assert float(got[0]) == pytest.approx(float(torch.softmax(r, 0)[0]), rel=1e-6)
    with pytest.raises(InputError, match="no contrastive prompt set"):
        tn.score(torch.zeros(1, 3, 2, 2), ["a dog"])
    gen = TextNorm(table_reward(table), {}, generator=lambda p: ["two cats"])
    assert gen.candidates("a cat") == ["a cat", "two cats"]
    with pytest.raises(InputError, match="temperature"):
        TextNorm(table_reward(table), {}, temperature=0)


def test_textnorm_grad_path_matches_no_grad():
    table = {"a": 1.0, "b": 0.3, "c": -1.0}
    tn = TextNorm(table_reward(table), {"a": ["b", "c"], "b": ["a"]}, temperature=0.7)
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(tn.score(x, ["a", "b"]), tn.score(x, ["a", "b"], grad=True).detach())


def test_ensemble_modes():
    a = lambda images, prompts: [1.0, 2.0]  # noqa: E731
    b = lambda images, prompts: [5.0, 2.0]  # noqa: E731  (spread 2: std 2 and var 4 differ)
    x = torch.zeros(2, 3, 2, 2)
    assert Ensemble([a, b]).score(x, ["p", "q"]).tolist() == [3.0, 2.0]
    assert Ensemble([a, b], mode="ur", lam=0.5).score(x, ["p", "q"]).tolist() == [2.0, 2.0]
    assert Ensemble([a, b], mode="ur", lam=0.5, spread="var").score(x, ["p", "q"]).tolist() == [1.0, 2.0]
    assert Ensemble([a, b], mode="min").score(x, ["p", "q"]).tolist() == [1.0, 2.0]
    s = torch.tensor([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])
    torch.testing.assert_close(combine(s, "ur", lam=2.0, spread="var"),
                               s.mean(0) - 2.0 * torch.from_numpy(np.var(s.numpy(), axis=0)))
    # Ensembles of TextNorm rewards are rewards too, and nest.
    tn = TextNorm(table_reward({"p": 1.0, "q": 0.0}), {"p": ["q"], "q": ["p"]})
    nested = Ensemble([Ensemble([tn, a]), b], mode="min")
    assert nested.score(x, ["p", "q"]).shape == (2,)
    with pytest.raises(InputError):
        Ensemble([a], mode="median")


def test_cross_validation_never_looks_at_held_out_fold():
    rng = np.random.default_rng(0)
    objective = rng.random((6, 40))
    folds = kfold_assignment(40, 4, seed=1)
    chosen = cross_validate(objective, folds)
    for f in range(4):
        tampered = objective.copy()
        tampered[:, folds == f] = rng.random((6, int((folds == f).sum()))) * 100  # change only the held-out fold
        assert cross_validate(tampered, folds)[f] == chosen[f]
        assert chosen[f] == np.argmax(objective[:, folds != f].mean(axis=1))


def test_select_hyperparameters_on_tia2_labels():
    s = load_subset("counting")
    rng = np.random.default_rng(0)
    # A member whose original-prompt reward is informative but noisy, and a near miss at 0.
    member = [torch.tensor([float(a) + rng.normal(0, 0.8), rng.normal(0, 0.8)]) for a in s.aligned]
    cv = select_hyperparameters(s, [member], temperatures=[0.1, 1.0, 10.0], k=5)
    oracle = select_hyperparameters(s, [member], temperatures=[0.1, 1.0, 10.0], mode="per_prompt_oracle")
    assert cv.heldout["n_prompts"] == 146 and cv.chosen["temperature"] in (0.1, 1.0, 10.0)
    assert len(cv.folds) == 5 and "cross-validation" in cv.label and "ORACLE" in oracle.label
    assert oracle.heldout["auroc"] >= cv.heldout["auroc"]
    ens = select_hyperparameters(s, [member, member], temperatures=[1.0], lams=[0.0, 1.0], k=3)
    assert set(ens.chosen) == {"temperature", "lam"}


def test_selection_does_not_follow_the_last_bits_of_the_scores():
    """Another CPU's kernels move a float64 score by an ulp or so; near saturation (small temperatures) that decides
    whether two images tie, and with it a per-prompt metric, the oracle's choice and cross-validation's. The
    TextNorm scores are rounded to 40 significant bits before they are ranked, so the selection is the same."""
    s = load_subset("counting")
    rng = np.random.default_rng(0)
    member = [torch.tensor([float(a) * 3 + rng.normal(0, 2), rng.normal(0, 2), rng.normal(0, 2)],
                           dtype=torch.float64) for a in s.aligned]
    nudged = [m * (1 + torch.tensor(rng.choice([-2e-16, 0.0, 2e-16], size=len(m)))) for m in member]
    assert any(not torch.equal(a, b) for a, b in zip(member, nudged))
    temperatures = [0.01, 0.03, 0.1, 1.0]
    for mode in ("cv", "per_prompt_oracle"):
        a = select_hyperparameters(s, [member], temperatures=temperatures, k=5, mode=mode)
        b = select_hyperparameters(s, [nudged], temperatures=temperatures, k=5, mode=mode)
        assert a.heldout == b.heldout and a.chosen == b.chosen and a.folds == b.folds


def test_a_dual_encoder_reward_scores_in_float64_when_loaded_so():
    """The misalignment table loads its rewards in float64 (machine-independent once rounded): the embeddings and
    the set rewards stay float64 all the way, and agree with the float32 model to float32's precision."""
    from textnorm_t2i.rewards.registry import load_reward

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sets = [["a red circle", "a blue circle"], ["two green squares", "one green square", "a red square"],
            ["a yellow triangle"]]
    wide = load_reward("shapes-clip-a", dtype=torch.float64).score_sets(images, sets)
    narrow = load_reward("shapes-clip-a").score_sets(images, sets)
    assert all(w.dtype == torch.float64 and n.dtype == torch.float32 for w, n in zip(wide, narrow))
    for w, n in zip(wide, narrow):
        torch.testing.assert_close(w.float(), n, rtol=1e-4, atol=1e-4)


def test_rounding_to_significant_digits_keeps_the_order_of_small_scores():
    from textnorm_t2i.calibrate.select import round_significant

    x = np.array([1e-310, 1e-300, 1e-45, 3e-44, 2e-40, 0.5, 1.0 - 1e-15, 1.0, 0.0])
    r = round_significant(x)
    assert np.all(np.isfinite(r)) and np.all(np.diff(r[:6]) > 0) and r[-1] == 0.0 and r[-2] == 1.0
    assert np.array_equal(round_significant(x * (1 + 2e-16)), r)
