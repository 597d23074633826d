"""Reward-gradient fine-tuning (DRaFT): the gradient path of the rewards against their plain scores and against
finite differences, refusal of rewards without a gradient, and runs on tiny local models (resume bitwise after
SIGKILL, as RL)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from processes import environment, start_held
from textnorm_t2i.calibrate import Ensemble, TextNorm
from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.common import params_digest
from textnorm_t2i.rewards.base import as_reward
from textnorm_t2i.rewards.detect import DetectReward, ParseNet
from textnorm_t2i.rewards.registry import load_reward
from textnorm_t2i.trainers import WORLD
from tiny_models import save_tiny_shapes_pipeline, save_tiny_shapes_reward

PROMPTS = ["a red circle", "two blue squares", "a green triangle and a yellow circle"]
SETS = {"a red circle": ["a blue circle", "two red circles"], "two blue squares": ["one blue square"],
        "a green triangle and a yellow circle": ["a green triangle", "a yellow circle"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("draft")
    return {"generator": str(save_tiny_shapes_pipeline(root / "gen")),
            "reward": str(save_tiny_shapes_reward(root / "reward"))}


def draft_config(tiny, out, **extra):
    cfg = {"seed": 0, "generator": tiny["generator"], "out": str(out), "prompts": {"list": PROMPTS},
           "reward": {"name": "shapes-clip-a", "path": tiny["reward"]}, "sampling": {"steps": 3},
           "lora": {"rank": 2, "alpha": 2}, "steps": 3, "batch_size": 2, "truncation_steps": 2,
           "eval": {"every": 1, "prompts": PROMPTS[:2], "steps": 2}, "checkpoint_every": 1}
    cfg.update(extra)
    return cfg


def rewards(tiny):
    base = load_reward("shapes-clip-a", tiny["reward"])
    other = load_reward("shapes-clip-b", tiny["reward"])
    torch.manual_seed(0)
    detect = DetectReward(ParseNet({"widths": [8, 8, 8], "hidden": 16}))
    return {"raw": base, "textnorm": TextNorm(base, SETS, temperature=0.7),
            "ur-ensemble": Ensemble([TextNorm(base, SETS), TextNorm(other, SETS)], mode="ur", lam=0.5),
            "detect": detect, "detect-textnorm": TextNorm(detect, SETS, temperature=2.0)}


@pytest.mark.parametrize("kind", ["raw", "textnorm", "ur-ensemble", "detect", "detect-textnorm"])
def test_the_gradient_path_gives_the_same_scores(tiny, kind):
    reward = rewards(tiny)[kind]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with_graph = reward.score(x.clone().requires_grad_(True), PROMPTS, grad=True)
    assert with_graph.requires_grad and reward.differentiable
    torch.testing.assert_close(with_graph.detach().cpu(), reward.score(x, PROMPTS), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["raw", "textnorm", "ur-ensemble", "detect", "detect-textnorm"])
def test_the_gradient_matches_finite_differences(tiny, kind):
    """The directional derivative along a random direction, by central differences in float64 pixels."""
    reward = rewards(tiny)[kind]
    g = torch.Generator().manual_seed(2)
    x = (0.25 + 0.5 * torch.rand(3, 3, 32, 32, generator=g)).requires_grad_(True)
    v = torch.randn(x.shape, generator=g)
    reward.score(x, PROMPTS, grad=True).sum().backward()
    analytic = float((x.grad * v).sum())
    h = 1e-2
    with torch.no_grad():
        plus = reward.score(x + h * v / v.abs().max() * 0.5, PROMPTS).double().sum()
        minus = reward.score(x - h * v / v.abs().max() * 0.5, PROMPTS).double().sum()
    numeric = float(plus - minus) / (2 * h * 0.5 / float(v.abs().max()))
    assert numeric == pytest.approx(analytic, rel=0.05, abs=1e-3 * max(1.0, abs(analytic)))


def test_rewards_declare_whether_they_have_a_gradient():
    assert load_reward("shapes-clip-a").differentiable and load_reward("shapes-pref").differentiable
    assert load_reward("shapes-perceive-clean").differentiable is False
    assert TextNorm(load_reward("shapes-perceive-clean"), SETS).differentiable is False
    assert Ensemble([load_reward("shapes-clip-a"), load_reward("shapes-perceive-clean")]).differentiable is False
    assert as_reward(lambda images, prompts: [0.0] * len(prompts)).differentiable is None  # found out by trying


def test_a_reward_without_a_gradient_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import textnorm_t2i.finetune.models as models
    from textnorm_t2i.cli import main

    def no_loading(*args, **kwargs):
        raise AssertionError("the generator was loaded")

    monkeypatch.setattr(models, "load_pipeline", no_loading)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"out": str(tmp_path / "run"),
                                                     "reward": {"name": "shapes-perceive-clean"}}))
    rc = main(["finetune", "--method", "draft", "--config", str(tmp_path / "d.yaml")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("textnorm:")]
    assert rc == 2 and len(lines) == 1 and "needs a differentiable reward" in lines[0], err
    assert "shapes-perceive-clean" in lines[0] and not (tmp_path / "run").exists()


def test_a_callable_without_autograd_is_refused(tiny, tmp_path):
    from textnorm_t2i.trainers import DraftTrainer

    def counts(images, prompts):  # numbers from NumPy: no gradient reaches the pixels
        return images.detach().numpy().mean(axis=(1, 2, 3))

    with pytest.raises(InputError, match="'counts' is not"):
        DraftTrainer(draft_config(tiny, tmp_path / "run"), reward=counts, progress=False).train()
    assert not (tmp_path / "run" / "lora").exists()


def test_a_callable_reward_without_evaluation_loads_no_reward_model(tiny, tmp_path, monkeypatch):
    """cfg.reward's models are read only by the evaluation: with a callable objective and no evaluation, none
    is built (the benchmark against trl measures the training loop, not an idle reward model)."""
    import textnorm_t2i.finetune.draft as engine
    from textnorm_t2i.trainers import DraftTrainer

    def refuse(spec):
        raise AssertionError("cfg.reward's views were built")

    monkeypatch.setattr(engine, "build_views", refuse)
    out = DraftTrainer(draft_config(tiny, tmp_path / "r", steps=1, eval={"every": 0}),
                       reward=lambda images, prompts: images.mean(dim=(1, 2, 3)), progress=False).train()
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    with pytest.raises(AssertionError, match="views were built"):  # the evaluation still reads them
        DraftTrainer(draft_config(tiny, tmp_path / "e", steps=1, eval={"every": 1, "prompts": PROMPTS[:2],
                                                                       "steps": 2}),
                     reward=lambda images, prompts: images.mean(dim=(1, 2, 3)), progress=False).train()


@pytest.mark.slow
def test_draft_runs_logs_and_writes_a_lora(tiny, tmp_path):
    from textnorm_t2i.finetune.draft import run_draft
    from textnorm_t2i.rundir import clearable_entries

    out = run_draft(draft_config(tiny, tmp_path / "d", reg_coef=0.5, randomized_truncation=True,
                                 eval={"every": 1, "prompts": PROMPTS[:2], "steps": 3}), progress=False, truth=WORLD)
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["drift"]) > 0 and float(rows[-1]["reg"]) >= 0
    # KL of the stochastic policy from the base: 0 for the base itself, positive once the adapter moved.
    assert float(rows[0]["kl_base"]) == 0 == float(rows[0]["kl_last_step"])
    assert float(rows[-1]["kl_base"]) > 0 and float(rows[-1]["kl_last_step"]) >= 0
    assert (out / "lora" / "adapter_model.safetensors").is_file() and (out / "report.html").is_file()
    assert clearable_entries(out, "finetune")


@pytest.mark.slow
def test_draft_with_a_callable_reward_raises_it(tiny, tmp_path):
    """A positive control on the tiny model: the gradient of a simple reward (redness) moves the images."""
    from textnorm_t2i.trainers import DraftTrainer

    def redness(images, prompts):
        return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))

    out = DraftTrainer(draft_config(tiny, tmp_path / "r", steps=6, lr=3e-2, eval={"every": 6, "prompts": PROMPTS,
                                                                                  "steps": 3}),
                       reward=redness, progress=False).train()
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert float(rows[-1]["objective"]) > float(rows[0]["objective"]) + 0.01, rows


@pytest.mark.slow
def test_draft_resume_after_sigkill_is_bitwise_identical(tiny, tmp_path):
    def cli(path, *extra):
        return [sys.executable, "-m", "textnorm_t2i.cli", "finetune", "--method", "draft", "--config", str(path),
                *extra]

    # Two micro-batches per step: accumulation is part of what must resume bit for bit.
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(draft_config(tiny, tmp_path / name, steps=4,
                                                                          gradient_accumulation_steps=2)))
    subprocess.run(cli(tmp_path / "a.yaml"), check=True, env=environment(), capture_output=True)
    proc, _ = start_held(cli(tmp_path / "b.yaml"), environment(), "draft:step:2")  # before checkpoint-2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "b" / "checkpoint-1").exists() and not (tmp_path / "b" / "checkpoint-2").exists()
    subprocess.run(cli(tmp_path / "b.yaml", "--resume"), check=True, env=environment(), capture_output=True)
    a = load_file(Path(tmp_path / "a" / "lora" / "adapter_model.safetensors"))
    b = load_file(Path(tmp_path / "b" / "lora" / "adapter_model.safetensors"))
    assert params_digest(a) == params_digest(b)
    rows = list(csv.DictReader((tmp_path / "b" / "eval.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]


def test_an_ensemble_whose_members_agree_has_a_finite_gradient():
    from textnorm_t2i.calibrate.ensemble import combine

    scores = torch.tensor([[0.3, 1.0], [0.3, 2.0]], requires_grad=True)
    combine(scores, "ur", lam=0.5).sum().backward()
    assert bool(torch.isfinite(scores.grad).all())
    assert combine(scores.detach(), "ur", lam=1.0).tolist() == pytest.approx([0.3, 1.0])


def test_held_out_evaluation_prompts_leave_out_the_training_prompts():
    from textnorm_t2i.finetune.common import eval_prompts, training_prompts
    from textnorm_t2i.finetune.config import load_finetune_config

    cfg = load_finetune_config("draft", None, ["eval.held_out=true", "eval.n_prompts=5", "prompts.n=6"])
    held_out, train = eval_prompts(cfg, truth=WORLD), training_prompts(cfg, truth=WORLD)
    assert len(held_out) == 5 * len(cfg.prompts.subsets) and not set(held_out) & set(train)
    assert eval_prompts(cfg, truth=WORLD) == held_out  # the same prompts every time (seeded)


def test_the_engine_takes_its_ground_truth_from_the_caller():
    """Without a ground truth, subset prompts are one clear error and a listed-prompt run judges nothing; with the
    world's, the oracle judges world prompts only."""
    import torch

    from textnorm_t2i.finetune.common import training_prompts
    from textnorm_t2i.finetune.config import load_finetune_config
    from textnorm_t2i.finetune.truth import GroundTruth, gold_verdicts

    cfg = load_finetune_config("draft", None, ["prompts.n=2"])
    with pytest.raises(InputError, match="prompts.subsets: prompts of a subset come from a ground truth"):
        training_prompts(cfg)
    listed = load_finetune_config("draft", None, ["prompts.list=[a red circle]"])
    assert training_prompts(listed) == ["a red circle"]
    assert isinstance(WORLD, GroundTruth)
    images = torch.zeros(2, 3, 32, 32)
    assert gold_verdicts(None, images, ["a red circle"] * 2) is None
    assert gold_verdicts(WORLD, images, ["a red circle"] * 2).tolist() == [0.0, 0.0]
    assert gold_verdicts(WORLD, images, ["a photo of a cat"] * 2) is None


def test_a_section_override_keeps_the_rest_of_its_default():
    """draft's sampling default is deterministic (eta 0): overriding its steps must not bring back eta 1 (the class
    default of SamplingConfig), from --set or from YAML."""
    from textnorm_t2i.config import from_dict
    from textnorm_t2i.finetune.config import DraftConfig, load_finetune_config

    assert load_finetune_config("draft", None, ["sampling.steps=5"]).sampling.eta == 0.0
    assert from_dict(DraftConfig, {"method": "draft", "sampling": {"steps": 5}}).sampling.eta == 0.0
    assert load_finetune_config("rl", None, ["sampling.steps=5"]).sampling.eta == 1.0



@pytest.mark.parametrize("k", [1, 2])
def test_recomputed_steps_give_the_gradients_of_an_uncheckpointed_pass(k):
    """DRaFT's checkpointing (forward without autograd, recomputed in the backward pass) changes no gradient: the
    LoRA gradients and the images equal those of a pass that keeps every activation, and of torch's checkpoint."""
    from torch.utils.checkpoint import checkpoint

    import textnorm_t2i.finetune.draft as engine
    from textnorm_t2i.finetune.backend import DiffusionBackend
    from textnorm_t2i.finetune.ddim import DDIMPolicy
    from textnorm_t2i.finetune.lora import add_lora
    from textnorm_t2i.generate.pipeline import build_pipeline

    pipe = build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16, "attention_head_dim": 4})
    backend = DiffusionBackend(pipe)
    params = add_lora(pipe.unet, rank=2)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    policy = DDIMPolicy(pipe.scheduler.config, num_steps=4, eta=0.0)
    prompts = ["a red circle", "two blue squares"]

    def grads(checkpointing: bool):
        images, _ = engine.draft_sample(backend, pipe.unet, prompts, policy, 3.0, torch.Generator().manual_seed(0),
                                        k, checkpointing=checkpointing)
        return images.detach(), torch.autograd.grad(images.square().mean(), params)

    torch_checkpoint = lambda fn, *a, **kw: checkpoint(fn, *a, use_reentrant=False)  # noqa: E731
    images, plain = grads(False)
    images_recomputed, recomputed = grads(True)
    original = engine.recompute
    engine.recompute = lambda fn, args, p: torch_checkpoint(lambda *a: fn(*a), *args)
    try:
        _, by_torch = grads(True)
    finally:
        engine.recompute = original
    assert torch.equal(images, images_recomputed)
    for a, b, c in zip(plain, recomputed, by_torch):
        assert float(a.norm()) > 0
        assert float((a - b).norm()) <= 1e-4 * float(a.norm()), (a - b).abs().max()  # float rounding: ~1e-5
        assert float((c - b).norm()) <= 1e-4 * float(a.norm())


@pytest.mark.slow
def test_two_processes_end_with_the_same_adapter(tiny, tmp_path):
    """Under `accelerate launch` with 2 CPU processes (DDP, gloo) both ranks end with the same LoRA weights."""
    from processes import accelerate_launch

    cfg = draft_config(tiny, tmp_path / "ddp", steps=2, batch_size=1, eval={"every": 0})
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [*accelerate_launch(2), "-m", "textnorm_t2i.cli", "finetune", "--method", "draft", "--config",
           str(tmp_path / "ddp.yaml")]
    result = subprocess.run(cmd, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [yaml.safe_load((tmp_path / "ddp" / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["samples_seen"] == 2 * 1 * 2  # steps x per-process batch x processes
    lora = load_file(tmp_path / "ddp" / "lora" / "adapter_model.safetensors")
    assert sum(float(v.abs().sum()) for k, v in lora.items() if "lora_B" in k) > 0  # the adapter moved
