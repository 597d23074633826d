"""The fine-tuning engine on tiny local models: the DDIM policy, best-of-n, SFT, RL, resume, processes."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from processes import accelerate_launch, start_held
from textnorm_t2i.finetune.bon import best_of_n_curve
from textnorm_t2i.finetune.common import params_digest
from textnorm_t2i.finetune.config import RLConfig, SamplingConfig
from textnorm_t2i.finetune.ddim import DDIMPolicy
from textnorm_t2i.finetune.rl import RLMinibatch
from textnorm_t2i.finetune.sft import select_top
from textnorm_t2i.finetune.stat_tracking import PromptStatTracker
from textnorm_t2i.rundir import clearable_entries
from textnorm_t2i.trainers import WORLD
from tiny_models import save_tiny_sd_pipeline, save_tiny_shapes_pipeline, save_tiny_shapes_reward

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red circle", "two blue squares", "a green triangle and a yellow circle"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return {"shapes": save_tiny_shapes_pipeline(root / "shapes"), "sd": save_tiny_sd_pipeline(root / "sd"),
            "reward": save_tiny_shapes_reward(root / "reward")}


def config(assets, out, generator="shapes", **extra):
    cfg = {"seed": 0, "generator": str(assets[generator]), "out": str(out),
           "prompts": {"list": PROMPTS},
           "reward": {"name": "shapes-clip-a", "path": str(assets["reward"]), "textnorm": False},
           "sampling": {"steps": 3, "guidance_scale": 2.0, "eta": 1.0},
           "lora": {"rank": 2, "alpha": 2},
           "eval": {"every": 1, "prompts": PROMPTS[:2], "steps": 3, "seed": 5},
           "log": {"report_to": ["csv"]}}
    for k, v in extra.items():
        cfg[k] = v
    return cfg


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_step_matches_diffusers(prediction):
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = DDPMScheduler(prediction_type=prediction, beta_schedule="squaredcos_cap_v2", clip_sample=False).config
    policy = DDIMPolicy(cfg, num_steps=5, eta=0.7)
    ref = DDIMScheduler.from_config(cfg, set_alpha_to_one=False)
    ref.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g)
    for t in policy.timesteps:
        out = torch.randn(x.shape, generator=g)
        noise = torch.randn(x.shape, generator=g)
        mean, std = policy.step_distribution(out, t, x)
        ours = mean + std * noise
        theirs = ref.step(out, t, x, eta=0.7, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        lp = policy.log_prob(ours, mean, std)
        if std > 0:
            expected = torch.distributions.Normal(mean, std).log_prob(ours).mean(dim=(1, 2, 3))
        else:
            expected = torch.zeros(2)  # a deterministic step has no log-probability
        torch.testing.assert_close(lp, expected)
        x = ours


def test_helpers():
    rows = best_of_n_curve({"g": np.array([[0.0, 1.0, 1.0, 0.0]])}, np.array([[0.3, 0.4, 0.9, 0.1]]), [1, 2, 4])
    assert [r["g"] for r in rows] == [0.5, 1.0, 1.0]
    assert select_top(["a"] * 10, np.arange(10.0), 0.1).tolist() == [9]
    tracker = PromptStatTracker(buffer_size=8, min_count=2)
    adv = tracker.update(["a", "a", "b", "b"], np.array([0.0, 2.0, 5.0, 7.0]))
    assert np.allclose(adv, [-1, 1, -1, 1], atol=1e-5)
    tracker2 = PromptStatTracker()
    tracker2.load(json.loads(json.dumps(tracker.state())))
    assert tracker2.state() == tracker.state()


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["shapes", "sd"])
def test_rl_runs_and_logs(assets, tmp_path, generator):
    from textnorm_t2i.finetune.rl import run_rl

    cfg = config(assets, tmp_path / "rl", generator, epochs=2, batch_size=4, train_batch_size=2)
    cfg["reward"]["textnorm"] = True
    out = run_rl(cfg, progress=False, truth=WORLD)
    rows = read_csv(out / "eval.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert {"objective", "raw_reward", "textnorm_reward", "gold_alignment", "drift", "samples"} <= set(rows[0])
    assert float(rows[0]["drift"]) == 0.0 and int(rows[-1]["samples"]) == 8
    assert (out / "grids" / "step_00002.png").exists() and (out / "lora" / "adapter_model.safetensors").exists()
    lora = load_file(out / "lora" / "adapter_model.safetensors")
    assert lora and all("lora" in k for k in lora)
    # The run report: one line per evaluated image and step, a self-contained page with plots and grids.
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [0, 1, 2]
    assert {"prompt", "objective", "raw_reward", "textnorm_reward", "drift"} <= set(samples[0])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Base vs tuned" in html and "http" not in html
    if generator == "shapes":
        assert 0.0 <= float(rows[0]["gold_alignment"]) <= 1.0
    assert clearable_entries(out, "finetune")  # all it wrote is declared, so --overwrite may clear it


def test_policy_gradient_step_moves_log_probs_the_right_way(assets):
    """One RL step with advantage +1 on sample 0 and -1 on sample 1 makes sample 0's denoising path more
    likely and sample 1's less likely under the updated policy."""
    from textnorm_t2i.finetune.backend import DiffusionBackend
    from textnorm_t2i.finetune.ddim import sample_trajectories
    from textnorm_t2i.finetune.lora import add_lora
    from textnorm_t2i.finetune.models import load_pipeline
    from textnorm_t2i.finetune.rl import rl_step_loss

    pipe = load_pipeline(assets["shapes"])
    backend = DiffusionBackend(pipe)
    params = add_lora(backend.unet, rank=4, alpha=4)
    policy = DDIMPolicy(pipe.scheduler.config, 3, eta=1.0)
    traj = sample_trajectories(backend, PROMPTS[:2], policy, 2.0, torch.Generator().manual_seed(0))
    uncond = backend.encode(["", ""])
    adv = torch.tensor([1.0, -1.0])

    def log_probs():
        from textnorm_t2i.finetune.ddim import guided_output

        total = torch.zeros(2)
        with torch.no_grad():
            for j, t in enumerate(traj.timesteps):
                out = guided_output(backend.unet, traj.latents[j], t, traj.cond, uncond, 2.0)
                mean, std = policy.step_distribution(out, t, traj.latents[j])
                total += policy.log_prob(traj.latents[j + 1], mean, std)
        return total

    before = log_probs()
    torch.testing.assert_close(before, traj.log_probs.sum(0))  # LoRA starts as the identity
    assert policy.stochastic == [True, True, False]  # the step from t = 0 is deterministic
    cfg = RLConfig(clip_range=10.0, sampling=SamplingConfig(guidance_scale=2.0))
    for j, t in enumerate(traj.timesteps[:2]):
        batch = RLMinibatch(traj.latents[j], traj.latents[j + 1], t, traj.cond, uncond, traj.log_probs[j], adv)
        loss, _ = rl_step_loss(backend.unet, policy, batch, cfg)
        loss.backward()
    # A step of tiny fixed length along the negative gradient: the first-order regime, where the
    # change of each log-prob has the sign of its gradient's dot product with the step.
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    with torch.no_grad():
        for p in params:
            p -= 1e-4 * p.grad / norm
    delta = log_probs() - before
    assert delta[0] > 0 > delta[1]


@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_several_denoising_steps_in_one_pass_equal_one_step_at_a_time(assets, kl_coef):
    """The batched training pass (timesteps_per_pass > 1) gives the loss and gradient of the per-step sum."""
    from textnorm_t2i.finetune.backend import DiffusionBackend
    from textnorm_t2i.finetune.common import adapters_off
    from textnorm_t2i.finetune.ddim import sample_trajectories
    from textnorm_t2i.finetune.lora import add_lora
    from textnorm_t2i.finetune.models import load_pipeline
    from textnorm_t2i.finetune.rl import rl_step_loss

    pipe = load_pipeline(assets["sd"])
    backend = DiffusionBackend(pipe)
    params = add_lora(backend.unet, rank=2, alpha=2)
    with torch.no_grad():  # LoRA B starts at zero; move it so that the adapter matters for the KL term
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    policy = DDIMPolicy(pipe.scheduler.config, 4, eta=1.0)
    traj = sample_trajectories(backend, PROMPTS, policy, 2.0, torch.Generator().manual_seed(1))
    steps = [j for j, s in enumerate(policy.stochastic) if s]
    n, adv = len(PROMPTS), torch.tensor([1.0, -0.5, 0.25])
    uncond = backend.encode([""] * n)
    off = adapters_off(backend.unet)

    def grads(loss):
        for p in params:
            p.grad = None
        loss.backward()
        return [p.grad.clone() for p in params]

    cfg = RLConfig(clip_range=0.1, kl_coef=kl_coef, sampling=SamplingConfig(guidance_scale=2.0))
    per_step = sum(rl_step_loss(backend.unet, policy, RLMinibatch(
        traj.latents[j], traj.latents[j + 1], traj.timesteps[j], traj.cond, uncond, traj.log_probs[j], adv), cfg,
        off)[0] for j in steps) / len(steps)
    expected = grads(per_step)
    # The minibatch the training loop builds: every sample, every stochastic step, step-major.
    batch = RLMinibatch.from_trajectories(traj, torch.arange(n), steps, adv, uncond[:1], torch.device("cpu"))
    assert batch.latents.shape == (len(steps) * n, *traj.latents.shape[2:])
    batched, _ = rl_step_loss(backend.unet, policy, batch, cfg, off)
    torch.testing.assert_close(batched, per_step, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads(batched), expected):
        # float32 sums in another order (another batch layout): compare each gradient as a vector. The clipped-ratio
        # gradient is a difference of nearly equal terms (ratio ~ 1), so rounding reaches ~1e-4 of the norm
        # (measured here: up to 5e-5 with SDPA attention, 1.0e-4 with the matmul attention); a wrong formula is
        # off by O(1).
        assert float((got - want).norm()) <= 1e-3 * float(want.norm()) + 1e-12, (got - want).abs().max()


@pytest.mark.slow
def test_sft_and_bon(assets, tmp_path):
    from textnorm_t2i.finetune.bon import run_bon
    from textnorm_t2i.finetune.sft import run_sft

    cfg = config(assets, tmp_path / "sft", samples_per_prompt=4, top_fraction=0.25, steps=3, train_batch_size=2,
                 weight_by_reward=True, reg_coef=0.1, checkpoint_every=2)
    out = run_sft(cfg, progress=False, truth=WORLD)
    assert json.loads((out / "data.json").read_text())["kept"] == 3
    assert [int(r["step"]) for r in read_csv(out / "eval.csv")] == [0, 1, 2, 3]
    out = run_bon(config(assets, tmp_path / "bon", n_max=4, ns=[1, 2, 4]), progress=False, truth=WORLD)
    rows = read_csv(out / "bon.csv")
    assert [int(r["n"]) for r in rows] == [1, 2, 4]
    assert (out / "bon.png").exists()
    for run in (tmp_path / "sft", tmp_path / "bon"):
        assert clearable_entries(run, "finetune")  # all it wrote is declared, so --overwrite may clear it


def _cli(cfg_path, *extra, env=None):
    return [sys.executable, "-m", "textnorm_t2i.cli", "finetune", "--method", "rl", "--config", str(cfg_path), *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    return env


@pytest.mark.slow
def test_rl_resume_after_sigkill_is_bitwise_identical(assets, tmp_path):
    base = config(assets, tmp_path / "x", epochs=5, batch_size=4, train_batch_size=2, checkpoint_every=1)
    cfg_a, cfg_b = dict(base, out=str(tmp_path / "a")), dict(base, out=str(tmp_path / "b"))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg_a))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg_b))
    subprocess.run(_cli(tmp_path / "a.yaml"), check=True, env=_env(), capture_output=True)
    # Killed while it waits after a seeded epoch (before that epoch's checkpoint is written): the kill point is
    # the same on every run and on any machine, however loaded.
    target = int(np.random.default_rng(7).integers(1, 4))
    proc, _ = start_held(_cli(tmp_path / "b.yaml"), _env(), f"rl:epoch:{target}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "b" / f"checkpoint-{target - 1}").exists() or target == 1
    assert not (tmp_path / "b" / f"checkpoint-{target}").exists()
    assert not (tmp_path / "b" / "lora" / "adapter_model.safetensors").exists()
    subprocess.run(_cli(tmp_path / "b.yaml", "--resume"), check=True, env=_env(), capture_output=True)
    a = load_file(tmp_path / "a" / "lora" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "lora" / "adapter_model.safetensors")
    assert params_digest(a) == params_digest(b)
    assert [r["step"] for r in read_csv(tmp_path / "b" / "eval.csv")] == [str(i) for i in range(6)]


@pytest.mark.slow
def test_two_processes_stay_in_sync(assets, tmp_path):
    cfg = config(assets, tmp_path / "ddp", epochs=2, batch_size=2, train_batch_size=2)
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [*accelerate_launch(2), "-m", "textnorm_t2i.cli", "finetune",
           "--method", "rl", "--config", str(tmp_path / "ddp.yaml")]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / "ddp" / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    rows = read_csv(tmp_path / "ddp" / "eval.csv")
    assert int(rows[-1]["samples"]) == 2 * 2 * 2  # epochs x per-process batch x processes, counted once
    assert result.stdout.count("processes: 2") == 1


@pytest.mark.slow
def test_logged_textnorm_reward_equals_textnorm_score_cli(tmp_path):
    """The TextNorm reward fine-tuning logs (``textnorm_reward``) is the one ``textnorm score --textnorm`` computes."""
    from textnorm_t2i.cli import main
    from textnorm_t2i.finetune.config import load_finetune_config
    from textnorm_t2i.objectives.factory import build_views
    from textnorm_t2i.world.scene import render

    prompts = ["two red circles", "a blue square and a yellow triangle", "a green circle above a red square"]
    images = [render(p, seed=i) for i, p in enumerate(prompts)]
    for i, img in enumerate(images):
        img.save(tmp_path / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("".join(
        json.dumps({"image": f"{i}.png", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    cfg = load_finetune_config("rl", ROOT / "configs" / "rl.yaml", ["reward.temperature=0.5"])
    _, _, logged = build_views(cfg.reward)  # what the Evaluator logs as textnorm_reward
    x = torch.stack([torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1) for img in images])
    expected = logged.score(x, prompts)
    assert main(["score", "--reward", "shapes-clip-a", "--textnorm", "--temperature", "0.5", "--manifest",
                 str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "s.jsonl")]) == 0
    got = [json.loads(line)["score"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    torch.testing.assert_close(torch.tensor(got), expected, rtol=1e-5, atol=1e-6)
    assert len(logged.candidates(prompts[0])) > 2


def _tiny_rl(tmp_path, name, **overrides):
    from tiny_models import save_tiny_shapes_pipeline, save_tiny_shapes_reward

    gen = tmp_path / "gen"
    if not gen.exists():
        save_tiny_shapes_pipeline(gen)
        save_tiny_shapes_reward(tmp_path / "rw")
    return {"seed": 0, "generator": str(gen), "out": str(tmp_path / name),
            "prompts": {"list": ["a red circle", "two blue squares"]},
            "reward": {"name": "shapes-clip-a", "path": str(tmp_path / "rw")}, "sampling": {"steps": 3},
            "lora": {"rank": 2, "alpha": 2}, "epochs": 1, "batch_size": 4, "lr": 1e-2, "clip_range": 0.5,
            "eval": {"every": 0}, **overrides}


@pytest.mark.slow
def test_gradient_accumulation_equals_one_larger_minibatch(tmp_path):
    """2 minibatches of 2 with accumulation take the same optimiser step as 1 minibatch of 4."""
    from safetensors.torch import load_file

    from textnorm_t2i.finetune.rl import run_rl

    whole = run_rl(_tiny_rl(tmp_path, "whole", train_batch_size=4), progress=False, truth=WORLD)
    accumulated = run_rl(_tiny_rl(tmp_path, "acc", train_batch_size=2, gradient_accumulation_steps=2),
                         progress=False, truth=WORLD)
    separate = run_rl(_tiny_rl(tmp_path, "sep", train_batch_size=2), progress=False, truth=WORLD)
    a, b, c = (load_file(f / "lora" / "adapter_model.safetensors") for f in (whole, accumulated, separate))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a[k], c[k]) for k in a)  # two optimiser steps are not one


def test_bf16_autocast_runs_on_the_cpu_and_fp16_needs_a_gpu(tmp_path):
    from textnorm_t2i.errors import InputError
    from textnorm_t2i.finetune.config import as_config
    from textnorm_t2i.finetune.rl import run_rl

    out = run_rl(_tiny_rl(tmp_path, "bf16", train_batch_size=2, mixed_precision="bf16"), progress=False, truth=WORLD)
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="fp16 needs a GPU"):
            as_config("rl", _tiny_rl(tmp_path, "fp16", mixed_precision="fp16"))
    with pytest.raises(InputError, match="gradient_accumulation_steps=3 does not divide"):
        as_config("rl", _tiny_rl(tmp_path, "x", train_batch_size=2, gradient_accumulation_steps=3))
