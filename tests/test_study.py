"""The study: its statistics against brute force and independent references, the exact KL of evaluation
against torch.distributions, objectives scored two ways, and a tiny end-to-end study that resumes."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from textnorm_t2i.errors import InputError
from textnorm_t2i.study.analysis import (
    best_of_n_values,
    bon_picks,
    kl_bon,
    mean_ci,
    per_prompt,
    side_by_side,
    split_prompts,
)
from textnorm_t2i.study.summary import summary_markdown

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- best-of-n
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.sampled_from([1, 2, 4, 8]), st.data())
def test_best_of_n_equals_brute_force(n_prompts, n, data):
    n_max = 8
    objective = data.draw(arrays(np.float64, (n_prompts, n_max), elements=st.floats(-5, 5), unique=True))
    value = data.draw(arrays(np.float64, (n_prompts, n_max), elements=st.sampled_from([0.0, 1.0])))
    expected = []
    for i in range(n_prompts):
        picked = []
        for g in range(n_max // n):
            group = range(g * n, (g + 1) * n)
            best = max(group, key=lambda j: objective[i, j])
            picked.append(value[i, best])
        expected.append(np.mean(picked))
    np.testing.assert_allclose(best_of_n_values(objective, value, n), expected)
    picks = bon_picks(objective, n)
    np.testing.assert_allclose(np.take_along_axis(value, picks, axis=1).mean(1), expected)


def test_best_of_one_is_the_pool_mean():
    rng = np.random.default_rng(0)
    obj, val = rng.normal(size=(4, 16)), rng.integers(0, 2, size=(4, 16)).astype(float)
    np.testing.assert_allclose(best_of_n_values(obj, val, 1), val.mean(1))


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_kl_bon_matches_numerical_integration(n):
    """KL(best-of-n || base) for a continuous reward: the max of n uniforms has density n u^(n-1)."""
    from scipy.integrate import quad

    integral, _ = quad(lambda u: n * u ** (n - 1) * math.log(n * u ** (n - 1)) if u > 0 else 0.0, 0, 1)
    assert kl_bon(n) == pytest.approx(integral, abs=1e-7)


def test_mean_ci_against_scipy_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(1)
    v = rng.normal(0.5, 0.2, size=200)
    ours = mean_ci(v, 2000)
    ref = bootstrap((v,), np.mean, n_resamples=2000, method="percentile", random_state=0).confidence_interval
    assert ours["mean"] == pytest.approx(v.mean())
    assert ours["ci"][0] == pytest.approx(ref.low, abs=0.01) and ours["ci"][1] == pytest.approx(ref.high, abs=0.01)
    assert mean_ci(np.array([np.nan, 1.0]))["n"] == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=30, unique=True), st.floats(0.05, 0.95),
       st.integers(0, 99))
def test_split_prompts_is_a_seeded_partition(prompts, fraction, seed):
    val, test = split_prompts(prompts, fraction, seed)
    assert set(val).isdisjoint(test) and sorted(val + test) == sorted(prompts)
    assert val and test
    assert (val, test) == split_prompts(prompts, fraction, seed)


def test_side_by_side_without_annotator_noise_counts_exactly():
    rng = np.random.default_rng(2)
    a, b = rng.random(300) < 0.6, rng.random(300) < 0.4
    prompts = np.repeat(np.arange(100), 3)
    out = side_by_side(a, b, prompts, annotators=3, flip=0.0, unsure=0.0, seed=0, n_bootstrap=200)
    win, loss = (a & ~b), (b & ~a)
    assert out["win"]["mean"] == pytest.approx(win.mean())
    assert out["loss"]["mean"] == pytest.approx(loss.mean())
    assert out["win"]["mean"] + out["tie"]["mean"] + out["loss"]["mean"] == pytest.approx(1.0)
    assert out["win_to_loss"] == pytest.approx(win.sum() / loss.sum())


def test_side_by_side_of_a_model_with_itself_is_balanced():
    aligned = np.random.default_rng(3).random(2000) < 0.5
    out = side_by_side(aligned, aligned, np.arange(2000) // 4, 3, 0.1, 0.03, seed=0, n_bootstrap=200)
    lo, hi = (out["win"]["mean"] - out["loss"]["mean"] - 0.03, out["win"]["mean"] - out["loss"]["mean"] + 0.03)
    assert lo < 0 < hi  # noise alone gives no systematic winner


# ------------------------------------------------------------------------------------------------ exact KL
class _AffineUNet(torch.nn.Module):
    """A UNet stand-in: eps = a * x + b * cond-mean (+ delta when its 'adapter' is on)."""

    def __init__(self):
        super().__init__()
        self.delta = torch.nn.Parameter(torch.tensor(0.3))
        self.adapter_on = True

    def forward(self, x, t, encoder_hidden_states):
        shift = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        out = 0.5 * x + 0.1 * shift + (self.delta * torch.tanh(x) if self.adapter_on else 0.0)

        class Out:
            sample = out
        return Out()


class _Backend:
    device = torch.device("cpu")

    def __init__(self):
        self.unet = _AffineUNet()

    def encode(self, prompts):
        return torch.stack([torch.full((2, 3), float(len(p))) for p in prompts])

    def latent_shape(self, n):
        return (n, 2, 3, 3)

    def decode(self, x):
        return x

    @contextmanager
    def adapters_off(self):
        """The base model: the stand-in's 'adapter' switched off (what finetune's adapters_off does to LoRA)."""
        self.unet.adapter_on = False
        try:
            yield
        finally:
            self.unet.adapter_on = True


def test_evaluation_kl_equals_torch_distributions_reference():
    from diffusers import DDPMScheduler

    from textnorm_t2i.finetune.ddim import DDIMPolicy, guided_output
    from textnorm_t2i.study.evaluate import sample_with_kl

    backend = _Backend()
    policy = DDIMPolicy(DDPMScheduler(prediction_type="epsilon").config, num_steps=5, eta=1.0)

    base = backend.adapters_off

    prompts = ["a red circle", "two squares"]
    images, kl, kl_last = sample_with_kl(backend, prompts, policy, 3.0, torch.Generator().manual_seed(0), base=base)

    # Reference: replay the same trajectory; per step, KL of the two Gaussians from torch.distributions.
    g = torch.Generator().manual_seed(0)
    cond, uncond = backend.encode(prompts), backend.encode(["", ""])
    x = torch.randn(backend.latent_shape(2), generator=g)
    ref = torch.zeros(2, dtype=torch.float64)
    ref_steps = []
    with torch.no_grad():
        for t in policy.timesteps:
            mean, std = policy.step_distribution(guided_output(backend.unet, x, t, cond, uncond, 3.0), t, x)
            with base():
                base_mean, _ = policy.step_distribution(guided_output(backend.unet, x, t, cond, uncond, 3.0), t, x)
            if float(std) > 0:
                p = torch.distributions.Normal(mean.double(), float(std))
                q = torch.distributions.Normal(base_mean.double(), float(std))
                ref += torch.distributions.kl_divergence(p, q).flatten(1).sum(1)
                ref_steps.append(torch.distributions.kl_divergence(p, q).flatten(1).sum(1).numpy())
            else:
                ref_steps.append(np.zeros(2))
            x = mean + std * torch.randn(x.shape, generator=g)
    # With no threshold, the sum and the last step (reported apart, never also in the sum) make the exact KL.
    np.testing.assert_allclose(kl + kl_last, ref.numpy(), rtol=1e-4)
    from textnorm_t2i.finetune.ddim import sample_with_step_kl

    _, per_step = sample_with_step_kl(backend, prompts, policy, 3.0, torch.Generator().manual_seed(0), base=base)
    np.testing.assert_allclose(per_step, np.stack(ref_steps, axis=1), rtol=1e-4)  # every step, not only the sum
    torch.testing.assert_close(images, x)
    assert (kl > 0).all()
    # The headline sum leaves out the steps with sigma below the threshold; the last stochastic step is apart.
    stds = np.array(policy.stds)
    _, kl_big, kl_last2 = sample_with_kl(backend, prompts, policy, 3.0, torch.Generator().manual_seed(0), base=base,
                                         min_std=0.05)
    reference = np.stack(ref_steps, axis=1)
    np.testing.assert_allclose(kl_big, reference[:, stds >= 0.05].sum(axis=1), rtol=1e-4)
    last = max(j for j, s in enumerate(stds) if s > 0)
    assert stds[last] < 0.05 and stds.max() >= 0.05  # the threshold splits this schedule
    np.testing.assert_allclose(kl_last2, reference[:, last], rtol=1e-4)
    np.testing.assert_allclose(kl_last, kl_last2)
    _, kl_base, _ = sample_with_kl(backend, prompts, policy, 3.0, torch.Generator().manual_seed(0), base=None)
    assert (kl_base == 0).all()


def test_evaluation_images_at_another_eta_keep_the_stochastic_policys_kl():
    """DRaFT's models are judged on images sampled as in training (eta 0) while their KL stays the stochastic
    policy's: the KL equals the eta = 1 evaluation's, the images equal a deterministic pass with the same seeds."""
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    from textnorm_t2i.finetune.common import derived_seed
    from textnorm_t2i.finetune.ddim import DDIMPolicy
    from textnorm_t2i.generate.grid import to_uint8
    from textnorm_t2i.study.evaluate import sample_eval, sample_with_kl

    backend = _Backend()
    backend.pipe = SimpleNamespace(scheduler=DDPMScheduler(prediction_type="epsilon"))
    backend.decode = lambda x: torch.sigmoid(x / 4).permute(0, 2, 3, 1)  # images in [0, 1], channels last

    base = backend.adapters_off

    prompts = ["a red circle", "two squares", "a blue triangle"]
    stochastic = sample_eval(backend, prompts, 2, 5, 3.0, seed=7, base=base, kl_min_std=0.05)
    deterministic = sample_eval(backend, prompts, 2, 5, 3.0, seed=7, base=base, kl_min_std=0.05, image_eta=0.0)
    np.testing.assert_array_equal(deterministic.kl, stochastic.kl)
    np.testing.assert_array_equal(deterministic.kl_last_step, stochastic.kl_last_step)
    assert (stochastic.kl > 0).all()
    flat = [p for _ in range(2) for p in prompts]
    policy = DDIMPolicy(backend.pipe.scheduler.config, 5, eta=0.0)
    x, kl, _ = sample_with_kl(backend, flat, policy, 3.0, torch.Generator().manual_seed(derived_seed(7, 0)))
    assert (kl == 0).all()  # a deterministic sampler has no KL of its own to report
    torch.testing.assert_close(deterministic.images, torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2))
    assert not torch.equal(deterministic.images, stochastic.images)
    # The base model (no adapter to switch off) has no KL: its deterministic evaluation needs no stochastic pass.
    assert (sample_eval(backend, prompts, 1, 5, 3.0, seed=7, image_eta=0.0).kl == 0).all()


# ------------------------------------------------------------------------------------------------ objectives
def test_objective_rewards_score_what_the_scorer_gives():
    from textnorm_t2i.study.objectives import ObjectiveScorer
    from textnorm_t2i.world.scene import render

    prompts = ["two red circles", "a blue square above a green triangle", "three yellow triangles"]
    images = torch.stack([torch.from_numpy(np.array(render(p, seed=i))).permute(2, 0, 1).float() / 255
                          for i, p in enumerate(prompts)])
    scorer = ObjectiveScorer({"shapes-clip-a": 0.5, "shapes-clip-b": 2.0}, ["shapes-clip-a", "shapes-clip-b"],
                             ur_lam=0.7)
    scores = scorer(images, prompts)
    for name in ("raw/shapes-clip-a", "tn/shapes-clip-b", "ens-mean-raw", "ens-mean-tn", "ens-ur-tn"):
        direct = scorer.reward(name).score(images, prompts).double().numpy()
        np.testing.assert_allclose(direct, scores[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # TextNorm scores are probabilities over each prompt's contrastive set.
    assert ((scores["tn/shapes-clip-a"] > 0) & (scores["tn/shapes-clip-a"] < 1)).all()
    np.testing.assert_allclose(scores["ens-ur-tn"], scores["ens-mean-tn"] - 0.7 * scores["disagreement-tn"],
                               rtol=1e-5)


def test_prompt_free_control_ignores_the_prompt_and_keeps_the_gradient():
    """DRaFT's prompt-free control: the raw reward averaged over fixed prompts, whatever the image's prompt; its score
    and its gradient equal the average computed from the raw reward pair by pair."""
    from textnorm_t2i.study.objectives import ObjectiveScorer, PromptFreeReward
    from textnorm_t2i.world.scene import render

    fixed = ["two red circles", "a blue square above a green triangle", "three yellow triangles"]
    images = torch.stack([torch.from_numpy(np.array(render(p, seed=i))).permute(2, 0, 1).float() / 255
                          for i, p in enumerate(fixed[:2])])
    scorer = ObjectiveScorer({"shapes-clip-a": 0.5}, controls=("shapes-clip-a", fixed))
    raw = scorer.reward("raw/shapes-clip-a")
    control = scorer.reward("control/prompt-free")
    assert isinstance(control, PromptFreeReward) and control.differentiable
    expected = torch.stack([raw.score(images[i:i + 1].repeat(3, 1, 1, 1), fixed).mean() for i in range(2)])
    for prompts in (["a green circle", "four blue squares"], fixed[:2]):
        torch.testing.assert_close(control.score(images, prompts), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scorer(images, ["x", "y"])["control/prompt-free"], expected.numpy(), rtol=1e-5,
                               atol=1e-5)
    x = images.clone().requires_grad_(True)
    (g_control,) = torch.autograd.grad(control.score(x, ["x", "y"], grad=True).sum(), x)
    x2 = images.clone().requires_grad_(True)
    pairs = raw.score(x2.repeat_interleave(3, dim=0), fixed * 2, grad=True)
    (g_pairs,) = torch.autograd.grad(pairs.reshape(2, 3).mean(1).sum(), x2)
    torch.testing.assert_close(g_control, g_pairs, rtol=1e-4, atol=1e-6)
    assert g_control.abs().sum() > 0
    with pytest.raises(InputError, match="at least one prompt"):
        PromptFreeReward(raw, [])


def test_random_direction_control_has_no_signal_and_the_reward_s_gradient_path():
    """DRaFT's drift control: scale x cosine(image embedding, u) with u a unit direction drawn for each image from its
    pixels: the prompt does not matter, the same image gets the same direction, different images independent ones
    (their scores average to ~0 with the spread of random cosines), and the gradient is that of the embedding."""
    import torch.nn.functional as F

    from textnorm_t2i.study.objectives import ObjectiveScorer, RandomDirectionReward

    scorer = ObjectiveScorer({"shapes-clip-a": 0.5}, controls=("shapes-clip-a", ["a red circle"]))
    raw = scorer.reward("raw/shapes-clip-a")
    control = scorer.reward("control/random-direction")
    assert isinstance(control, RandomDirectionReward) and control.differentiable
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = control.score(images, ["x"] * 64)
    torch.testing.assert_close(control.score(images[:4], ["a", "b", "c", "d"]), scores[:4])
    np.testing.assert_allclose(scorer(images[:4], ["x"] * 4)["control/random-direction"], scores[:4].numpy(),
                               rtol=1e-5, atol=1e-5)
    # The same pixels as uint8 give the same directions; a different seed gives others.
    quantised = (images[:4] * 255).round().to(torch.uint8)
    torch.testing.assert_close(control.score(quantised, ["x"] * 4), control.score(quantised.float() / 255, ["x"] * 4))
    assert torch.equal(control.direction(images[0], 8), control.direction(quantised[0].float() / 255, 8))
    assert not torch.allclose(RandomDirectionReward(raw, seed=1).score(images[:4], ["x"] * 4), scores[:4])
    # Random unit directions in d dimensions: cosines of mean 0 and variance 1/d (the raw reward's are all alike).
    dim = raw.image_embeddings(images[:1]).shape[-1]
    cosines = scores / raw.logit_scale()
    assert abs(float(cosines.mean())) < 4 / (dim * 64) ** 0.5
    assert 0.5 / dim < float(cosines.var()) < 2.0 / dim
    # The gradient is the embedding's Jacobian applied to the image's direction.
    x = images[:2].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(control.score(x, ["x", "y"], grad=True).sum(), x)
    x2 = images[:2].clone().requires_grad_(True)
    u = torch.stack([control.direction(i, dim) for i in images[:2]])
    (g_ref,) = torch.autograd.grad((raw.logit_scale() * (F.normalize(raw.image_embeddings(x2), dim=-1) * u).sum(-1))
                                   .sum(), x2)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)
    assert g.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ end to end
TINY = """
bootstrap: 100
prompts: {train_per_subset: 2, eval_per_subset: 2}
objectives: {rewards: [shapes-clip-a, shapes-clip-b, shapes-perceive-clean], ensemble: [shapes-clip-a, shapes-clip-b],
             temperatures: [0.1, 1.0, 10.0], k: 3}
pool: {n_max: 4, ns: [1, 2, 4], chunk: 16, steps: 4}
map: {look_weights: [4], noise_scales: [1], n: 2}
sft: {objectives: [raw/shapes-clip-a, tn/shapes-clip-a, control/aligned, control/random],
      train: {steps: 2, train_batch_size: 4, guided_loss: true}}
rl: {objectives: [raw/shapes-clip-a, ens-ur-tn], eval_every: 1,
     train: {epochs: 2, batch_size: 4, train_batch_size: 4, images_per_prompt: 2}}
draft: {objectives: [raw/shapes-clip-a, ens-ur-tn, control/random-direction], eval_every: 1, lrs: [0.001, 0.01],
       lr_steps: 1,
       train: {steps: 2, batch_size: 2}}
eval: {samples_per_prompt: 2, steps: 4}
side_by_side: {best_of: 2}
"""


# The same without the perceive reward, for tests of the early stages only (its CV and scoring are the slowest part).
TINY_TWO_REWARDS = TINY.replace("rewards: [shapes-clip-a, shapes-clip-b, shapes-perceive-clean]",
                                "rewards: [shapes-clip-a, shapes-clip-b]")
assert TINY_TWO_REWARDS != TINY


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A tiny study run in two parts: the early stages, then --resume for the rest."""
    from textnorm_t2i.study.config import load_study_config
    from textnorm_t2i.study.run import run_study

    folder = tmp_path_factory.mktemp("study")
    (folder / "study.yaml").write_text(TINY)
    cfg = load_study_config(str(folder / "study.yaml"), [f"work={folder / 'work'}", f"out={folder / 'out'}"])
    run_study(cfg, progress=False, only=["prompts", "temperatures", "pool", "scores", "bon"])
    pool_files = {p: p.stat().st_mtime_ns for p in (folder / "work" / "pool").iterdir()}
    ran = []
    run_study(cfg, resume=True, progress=False, on_stage=lambda s, t: ran.append(s))
    return folder, cfg, pool_files, ran


@pytest.mark.slow
def test_tiny_study_resumes_without_redoing_stages(tiny_study):
    from textnorm_t2i.rundir import clearable_entries

    folder, _, pool_files, ran = tiny_study
    assert clearable_entries(folder / "work", "study")  # all it wrote is declared (--overwrite may clear it)
    assert sorted(p.name for p in (folder / "out").iterdir()) == [".textnorm-run", "report.html", "results.json",
                                                                  "samples.jsonl"]
    assert "pool" not in ran and "bon" not in ran
    assert {"map", "base", "sft", "rl", "draft", "compare", "report"} <= set(ran)
    assert {p: p.stat().st_mtime_ns for p in (folder / "work" / "pool").iterdir()} == pool_files


@pytest.mark.slow
def test_tiny_study_results_are_complete(tiny_study):
    import json

    folder, cfg, _, _ = tiny_study
    out = folder / "out"
    results = json.loads((out / "results.json").read_text())
    objectives = cfg.objective_names()
    assert set(results["bon"]["objectives"]) == set(objectives) | {"ORACLE gold"}
    for row in results["bon"]["objectives"].values():
        assert len(row["gold"]) == len(cfg.pool.ns)
        for point in row["gold"]:
            assert point["ci"][0] <= point["mean"] <= point["ci"][1]
    lines = (out / "samples.jsonl").read_text().splitlines()
    sample = json.loads(lines[0])
    assert {"prompt", "sample", "scores", "aligned", "reasons", "model"} <= set(sample)
    n_eval = len(results["prompts"]["eval"]["counting"]) * 3
    assert len(lines) % (n_eval * cfg.eval.samples_per_prompt) == 0
    rl = results["rl"]
    assert set(rl) == set(cfg.rl.objectives)
    for run in rl.values():
        assert [e["step"] for e in run["evals"]] == [0, 1, 2]
        assert run["evals"][0]["kl"] == 0 and run["evals"][-1]["kl"] > 0
    assert set(results["compare"]) >= {"bon", "sft", "rl", "checkpoint_selection", "draft",
                                       "draft_checkpoint_selection"}
    # DRaFT through the one engine: evaluated by the study at every step, the optimised reward and KL logged.
    draft = results["draft"]
    assert set(draft) == set(cfg.draft.objectives)
    # DRaFT samples deterministically (draft.eta 0): its step 0 is the base model sampled that way, not `base`.
    base_eta0 = json.loads((folder / "work" / "eval" / "base-eta0.json").read_text())
    assert {r["prompt"] for r in base_eta0} == {r["prompt"] for r in json.loads(
        (folder / "work" / "eval" / "base.json").read_text())}
    for run in draft.values():
        assert run["evals"][0]["gold"] == pytest.approx(np.mean(per_prompt(base_eta0, lambda r: r["aligned"])))
        assert [e["step"] for e in run["evals"]] == [0, 1, 2]
        assert run["evals"][0]["kl"] == 0 and run["evals"][-1]["kl"] > 0 and "gold_lo" in run["evals"][-1]
        tr = run["trajectory"]
        assert tr["peak_gold"] >= tr["final_gold"] and tr["drop"]["ci"][0] <= tr["drop"]["mean"] <= tr["drop"]["ci"][1]
        assert tr["change"]["mean"] == pytest.approx(tr["final_gold"] - run["evals"][0]["gold"])
    # Each objective's lr is the one its own validation score chose; the signal-free control has nothing to choose
    # by and runs at the largest.
    for name in ("raw/shapes-clip-a", "ens-ur-tn"):
        probes = draft[name]["lr_probes"]
        assert set(probes) == {"0.001", "0.01"}
        assert draft[name]["config"]["lr"] == float(max(probes, key=probes.__getitem__))
    assert draft["control/random-direction"]["lr_probes"] == {}
    assert draft["control/random-direction"]["config"]["lr"] == 0.01
    # The drift control is scored in every evaluation (its own objective), is a row of DRaFT's tables and a line of
    # the answer, and is never a model of the side-by-side comparison or the checkpoint selection.
    assert "control/random-direction" in results["base"]["summary"]["scores"]
    assert "control/random-direction" not in results["compare"]["draft_checkpoint_selection"]
    assert "control" not in results["compare"]["draft"]["raw_model"]
    assert "| control: a random direction per image |" in summary_markdown(results)
    control = next(x for x in summary_markdown(results).splitlines() if x.startswith("- DRaFT drift control"))
    change = draft["control/random-direction"]["trajectory"]["change"]
    said = ("gold fell" if change["ci"][1] < 0 else "drift alone raised it, or chance" if change["ci"][0] > 0 else
            "no change detected")
    assert said in control
    summary = summary_markdown(results)
    assert "Reward-gradient fine-tuning (DRaFT-2)" in summary and "peak gold (step)" in summary
    assert "DRaFT checkpoint selection without gold" in summary
    # The headline KL leaves out the steps with sigma < eval.kl_min_std; the last stochastic step is shown apart.
    assert "kl_last_step" in results["base"]["summary"] and "KL, last step" in summary
    # The tiny study has no raw/TextNorm pair under DRaFT: no paired line (the sentences: test_draft_answer_*).
    assert results["compare"]["draft_pairs"] == {}
    # SFT runs through the one engine, with its controls; the controls are never ranked with the objectives.
    sft = results["sft"]
    assert set(sft) == set(cfg.sft.objectives)
    assert sft["control/aligned"]["kept_gold"] == 1.0 and 0 <= sft["control/random"]["kept_gold"] <= 1
    assert (folder / "work" / "sft" / "control-random" / "lora" / "adapter_model.safetensors").is_file()
    assert "control" not in results["compare"]["sft"]["raw_model"]


@pytest.mark.slow
def test_tiny_study_measures_pixel_drift_from_the_base(tiny_study):
    """Every fine-tuned evaluation records each image's RMS difference from the base model's image of the same seed
    (sampled the same way); the base itself has none."""
    import json

    from safetensors.torch import load_file

    from textnorm_t2i.study.evaluate import pixel_drift

    folder, _, _, _ = tiny_study
    results = json.loads((folder / "out" / "results.json").read_text())
    run = results["draft"]["raw/shapes-clip-a"]
    assert run["evals"][0]["drift"] == 0 and run["evals"][-1]["drift"] > 0
    eval_dir = folder / "work" / "eval"
    tag = run["evals"][-1]["tag"]
    recs = json.loads((eval_dir / f"{tag}.json").read_text())
    expected = pixel_drift(load_file(eval_dir / f"{tag}.safetensors")["images"],
                           load_file(eval_dir / "base-eta0.safetensors")["images"])
    np.testing.assert_allclose([r["drift"] for r in recs], expected, atol=1e-4)
    assert "drift" in results["base"]["summary"] and results["base"]["summary"]["drift"]["mean"] == 0


@pytest.mark.slow
def test_tiny_study_runs_the_ur_ensemble_once_when_lambda_is_zero(tiny_study, monkeypatch):
    """With lambda = 0 the UR ensemble is the mean ensemble: its run is the mean's, made once."""
    import json
    from dataclasses import replace
    from types import SimpleNamespace

    from textnorm_t2i.study.run import Study

    folder, cfg, _, _ = tiny_study
    results = json.loads((folder / "out" / "results.json").read_text())
    made = json.loads(json.dumps(results["draft"]["raw/shapes-clip-a"]))
    made.pop("trajectory")
    study = Study(replace(cfg, draft=replace(cfg.draft, objectives=["ens-mean-tn", "ens-ur-tn"])), progress=False)
    calls, saved = [], {}
    monkeypatch.setattr(study, "save", lambda name, obj: saved.update({name: obj}))
    for lam, runs in ((0.0, ["ens-mean-tn"]), (0.5, ["ens-mean-tn", "ens-ur-tn"])):
        calls.clear()
        study._scorer = SimpleNamespace(ur_lam=lam)
        study._fine_tune_each("draft", "DRaFT", lambda _s, o: calls.append(o) or json.loads(json.dumps(made)))
        assert calls == runs
    study._scorer = SimpleNamespace(ur_lam=0.0)
    study._fine_tune_each("draft", "DRaFT", lambda _s, o: json.loads(json.dumps(made)))
    ur, mean = saved["draft"]["ens-ur-tn"], saved["draft"]["ens-mean-tn"]
    assert ur["same_as"] == "ens-mean-tn" and ur["evals"] == mean["evals"] and ur["trajectory"] == mean["trajectory"]


def _draft_results(change: dict, difference: dict) -> dict:
    """A results.json with one raw/TextNorm DRaFT pair and the drift control (for the summary's sentences)."""
    def run(gold: float, lr: float = 0.001, change_: dict | None = None) -> dict:
        ci = {"mean": gold, "ci": [gold - 0.05, gold + 0.05]}
        evals = [{"step": 0, "objective": 0.0, "gold": 0.3, "kl": 0.0, "kl_last_step": 0.0, "drift": 0.0,
                  "fidelity": 0.7},
                 {"step": 10, "objective": 1.0, "gold": gold, "kl": 12.0, "kl_last_step": 900.0, "drift": 2.5,
                  "fidelity": 0.6,
                  "summary": {"gold": ci}}]
        return {"evals": evals, "config": {"lr": lr, "steps": 10, "batch_size": 2, "truncation_steps": 2},
                "trajectory": {"peak_gold": 0.3, "peak_step": 0, "final_gold": gold, "proxy_gold_spearman": -1.0,
                               "drop": {"mean": 0.3 - gold, "ci": [0.0, 0.1]},
                               "change": change_ or {"mean": gold - 0.3, "ci": [-0.1, 0.0]}}}
    return {"config": {"draft": {"train": {"steps": 10, "batch_size": 2, "truncation_steps": 2}}},
            "draft": {"raw/shapes-clip-a": run(0.3), "tn/shapes-clip-a": run(0.28),
                      "control/random-direction": run(0.3, 0.003, change)},
            "compare": {"draft_pairs": {"shapes-clip-a": {"raw": "raw/shapes-clip-a", "textnorm": "tn/shapes-clip-a",
                                                          "difference": difference}}}}


@pytest.mark.parametrize("change, said", [({"mean": -0.1, "ci": [-0.15, -0.05]},
                                           "gold fell; its own score moved +1 (noise by design: a fresh direction per "
                                           "image), fidelity 0.700 → 0.600"),
                                          ({"mean": 0.1, "ci": [0.05, 0.15]}, "drift alone raised it, or chance"),
                                          ({"mean": 0.0, "ci": [-0.04, 0.03]}, "no change detected (its interval "
                                                                               "spans 0.070)")])
def test_draft_answer_reads_the_drift_control_three_ways(change, said):
    from textnorm_t2i.study.summary import draft_answer

    line = next(x for x in draft_answer(_draft_results(change, {"mean": 0.0, "ci": [-0.1, 0.1]}))
                if x.startswith("- DRaFT drift control"))
    assert said in line and "lr 0.003" in line and "KL 12 + 900 (last step) nats, pixel drift 2.5" in line
    assert "random direction drawn for every image" in line and "not over repeats of the walk" in line


def test_draft_answer_names_the_prompt_free_control_for_what_it_is():
    from textnorm_t2i.study.summary import draft_answer

    for change, said in (({"mean": -0.1, "ci": [-0.15, -0.05]}, "gold fell; its own score moved +1, fidelity"),
                         ({"mean": 0.1, "ci": [0.05, 0.15]}, "carries some alignment signal, so it is no null "
                                                             "control")):
        results = _draft_results(change, {"mean": 0.0, "ci": [-0.1, 0.1]})
        results["draft"]["control/prompt-free"] = results["draft"].pop("control/random-direction")
        lines = draft_answer(results)
        assert not any(x.startswith("- DRaFT drift control") for x in lines)
        line = next(x for x in lines if x.startswith("- DRaFT prompt-free control"))
        assert "averaged over the training prompts" in line and said in line and "noise by design" not in line


@pytest.mark.parametrize("difference, said", [({"mean": -0.1, "ci": [-0.15, -0.02]}, "(TextNorm lower)"),
                                              ({"mean": 0.1, "ci": [0.02, 0.15]}, "(TextNorm higher)"),
                                              ({"mean": 0.0, "ci": [-0.1, 0.1]}, "(no clear difference)")])
def test_draft_answer_gives_the_paired_difference(difference, said):
    """The overlapping intervals say "no clear difference"; the paired difference over prompts can still decide."""
    from textnorm_t2i.study.summary import draft_answer

    line = next(x for x in draft_answer(_draft_results({"mean": 0.0, "ci": [-0.1, 0.1]}, difference))
                if x.startswith("- DRaFT, shapes-clip-a:"))
    assert "final gold raw 0.300 [0.250, 0.350] vs TextNorm 0.280 [0.230, 0.330] — no clear difference" in line
    assert f"paired over prompts TextNorm − raw {fmt(difference)} {said}" in line


def fmt(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"


@pytest.mark.slow
def test_tiny_study_report_is_self_contained(tiny_study):
    import re

    folder, _, _, _ = tiny_study
    html = (folder / "out" / "report.html").read_text()
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) > 10
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:)?//', html)  # nothing fetched from the network
    for heading in ("Best-of-n", "SFT", "RL", "Side-by-side", "Checkpoint selection"):
        assert heading in html, heading


@pytest.mark.slow
def test_report_loads_in_headless_chromium(tiny_study, tmp_path):
    """Every image decodes and the page logs no error, in a real browser (required in CI)."""
    import os
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("TEXTNORM_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (TEXTNORM_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("chromium not installed (CI installs it and sets TEXTNORM_REQUIRE_BROWSER)")
    folder, _, _, _ = tiny_study
    html = (folder / "out" / "report.html").read_text()
    # A probe appended to a copy: counts images that failed to decode and errors thrown on the page, and
    # writes the verdict into the DOM that --dump-dom prints.
    probe = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const _ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  const p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors});
  document.body.appendChild(p);
});
</script>"""
    page = tmp_path / "report.html"
    page.write_text(html.replace("<head>", "<head>" + probe, 1))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    import json
    import re

    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    verdict = json.loads(found.group(1).replace("&quot;", '"'))
    assert verdict["images"] > 10 and verdict["broken"] == 0 and verdict["errors"] == [], verdict
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_ctrl_c_during_the_pool_then_resume(tmp_path, signum):
    """SIGINT (or SIGTERM) half-way through generation: one line, exit 130, finished chunks kept; --resume
    completes it."""
    import os
    import signal
    import subprocess
    import sys

    from processes import start_held

    (tmp_path / "s.yaml").write_text(TINY_TWO_REWARDS.replace("chunk: 16", "chunk: 4"))
    cmd = [sys.executable, "-m", "textnorm_t2i.cli", "study", "run", "--config", str(tmp_path / "s.yaml"),
           "--set", f"work={tmp_path / 'w'}", "--set", f"out={tmp_path / 'o'}", "--only", "prompts",
           "temperatures", "pool"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc, _ = start_held(cmd, env, "pool:4")  # waits after writing its second chunk (flat index 4)
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("textnorm")]
    assert proc.returncode == 130 and lines == ["textnorm: interrupted"] and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "w" / "stages" / "pool.json").exists()
    assert not list((tmp_path / "w" / "pool").glob(".*.tmp"))  # no partial chunk left behind
    assert len(list((tmp_path / "w" / "pool").glob("chunk-*.safetensors"))) == 2  # the finished chunks are kept
    if signum == "SIGTERM":
        return  # the same stop as SIGINT; the resume after it is checked once, below
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "w" / "pool").glob("chunk-*.safetensors"))) == 6  # 6 prompts x 4 samples / 4


# ------------------------------------------------------------------------- resumes that must not lie or lose work
def _copy_of(tiny_study, tmp_path, **overrides):
    """The tiny study's work folder copied (so the fixture stays intact), with its config pointed at the copy."""
    import shutil

    from textnorm_t2i.study.config import load_study_config

    folder, _, _, _ = tiny_study
    shutil.copytree(folder / "work", tmp_path / "work", symlinks=True)
    sets = [f"work={tmp_path / 'work'}", f"out={tmp_path / 'out'}"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_study_config(str(folder / "study.yaml"), sets)


@pytest.mark.slow
def test_a_resume_with_changed_settings_of_a_finished_stage_is_refused(tiny_study, tmp_path):
    from textnorm_t2i.errors import InputError
    from textnorm_t2i.study.run import run_study

    cfg = _copy_of(tiny_study, tmp_path, **{"rl.train.lr": 0.5})
    stages = tmp_path / "work" / "stages"
    before = {p.name: p.read_bytes() for p in stages.iterdir()}
    with pytest.raises(InputError, match=r"stage\(s\) rl compare ran with other settings \(rl.train.lr: 0.003 -> 0.5"):
        run_study(cfg, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in stages.iterdir()} == before
    assert not (tmp_path / "out").exists()
    # The record of each stage carries the settings it ran with (what the report can print).
    from textnorm_t2i.study.run import Study

    assert Study(cfg).record("rl")["settings"]["rl.train.lr"] == 0.003


@pytest.mark.slow
def test_a_wrong_or_corrupt_stage_record_is_run_again(tiny_study, tmp_path):
    from textnorm_t2i.study.run import Study, run_study

    cfg = _copy_of(tiny_study, tmp_path)
    stages = tmp_path / "work" / "stages"
    good = Study(cfg).result("bon")
    (stages / "bon.json").write_text("{}")
    (stages / "timings.json").write_text("[1, 2")
    assert Study(cfg).result("bon") is None and Study(cfg).result("timings") is None
    ran = []
    run_study(cfg, resume=True, progress=False, only=["bon"], on_stage=lambda s, t: ran.append(s))
    assert ran == ["bon"] and Study(cfg).result("bon") == good


@pytest.mark.slow
def test_a_truncated_pool_chunk_is_found_and_drawn_again(tiny_study, tmp_path):
    from textnorm_t2i.study.run import Study, run_study

    cfg = _copy_of(tiny_study, tmp_path)
    chunk = sorted((tmp_path / "work" / "pool").glob("chunk-*.safetensors"))[0]
    whole = chunk.read_bytes()
    with open(chunk, "r+b") as f:
        f.truncate(100)
    scores = tmp_path / "work" / "stages" / "pool_scores.safetensors"
    scores.write_bytes(scores.read_bytes()[:-10])
    study = Study(cfg)
    assert study.result("pool") is None and study.result("scores") is None  # their artefacts changed
    run_study(cfg, resume=True, progress=False, only=["pool", "scores"])
    assert chunk.read_bytes() == whole  # the chunk's own seed draws the same images again
    assert Study(cfg).result("scores") is not None


@pytest.mark.slow
def test_two_studies_cannot_write_one_report_folder(tiny_study, tmp_path):
    from textnorm_t2i.errors import InputError
    from textnorm_t2i.rundir import RunLock
    from textnorm_t2i.study.run import run_study

    cfg = _copy_of(tiny_study, tmp_path)
    with RunLock(tmp_path / "out"):  # another study writing its report there
        with pytest.raises(InputError, match="another run"):
            run_study(cfg, resume=True, progress=False, only=["report"])


def test_only_a_stage_whose_inputs_are_missing_or_a_redo_it_ignores_is_refused(tmp_path):
    from textnorm_t2i.errors import InputError
    from textnorm_t2i.study.config import load_study_config
    from textnorm_t2i.study.run import run_study

    (tmp_path / "s.yaml").write_text(TINY)
    cfg = load_study_config(str(tmp_path / "s.yaml"), [f"work={tmp_path / 'w'}", f"out={tmp_path / 'o'}"])
    with pytest.raises(InputError, match="stage bon needs scores, not done yet"):
        run_study(cfg, progress=False, only=["bon"])
    with pytest.raises(InputError, match="--redo pool: not among the --only stages"):
        run_study(cfg, progress=False, only=["bon"], redo=["pool"])
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()  # a plain rerun is not blocked
