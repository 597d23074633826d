"""RL fine-tuning (DDPO, with DPOK's KL penalty as an option), LoRA on the UNet.

Read top to bottom. Each epoch has two sections:

- SAMPLING: draw a batch of trajectories with the stochastic DDIM policy, score the final images, turn
  the rewards into per-prompt normalised advantages;
- TRAINING: take PPO-clipped policy-gradient steps over the denoising steps, in minibatches of
  :class:`RLMinibatch`.

Every random draw comes from a named stream (:class:`~textnorm_t2i.finetune.common.RandomStreams`) seeded
by (seed, epoch, rank), so a run resumed from a checkpoint equals an uninterrupted one. Runs unchanged
under ``accelerate launch``: each process samples its share of the batch and gradients are averaged.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.common import (
    RandomStreams,
    adapters_off,
    checkpoint_or_stop,
    eval_prompts,
    finish_ranks,
    open_accelerated_run,
    print_accounting,
)
from textnorm_t2i.finetune.config import RLConfig, as_config
from textnorm_t2i.finetune.ddim import DDIMPolicy, Trajectory, guided_output, sample_trajectories
from textnorm_t2i.finetune.evaluation import Evaluator, start_logging
from textnorm_t2i.finetune.lora import trainable_state
from textnorm_t2i.finetune.models import load_scheduler_config
from textnorm_t2i.finetune.report import write_run_report
from textnorm_t2i.finetune.setup import setup_training
from textnorm_t2i.finetune.stat_tracking import PromptStatTracker
from textnorm_t2i.finetune.truth import GroundTruth
from textnorm_t2i.rundir import GracefulStop


@dataclass
class RLMinibatch:
    """Denoising steps of some samples, flattened into one batch of ``B = samples x steps`` rows.

    Shapes (``C x H x W`` the latent, ``L x D`` the text embeddings):
        latents        (B, C, H, W)  x_t, where the step starts
        next_latents   (B, C, H, W)  x_{t-1}, what the sampling policy drew
        timesteps      (B,)          t of each row
        cond           (B, L, D)     prompt embeddings
        uncond         (B, L, D)     empty-prompt embeddings (classifier-free guidance)
        old_log_probs  (B,)          log p(x_{t-1} | x_t) under the sampling policy
        advantages     (B,)          the sample's normalised, clipped advantage
    """

    latents: torch.Tensor
    next_latents: torch.Tensor
    timesteps: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    old_log_probs: torch.Tensor
    advantages: torch.Tensor

    @classmethod
    def from_trajectories(cls, traj: Trajectory, samples: torch.Tensor, steps: list[int], advantages: torch.Tensor,
                          uncond_one: torch.Tensor, device: torch.device) -> RLMinibatch:
        """Rows for denoising ``steps`` of the ``samples`` of ``traj``, step-major."""
        n = len(samples)
        return cls(latents=traj.latents[steps][:, samples].flatten(0, 1),
                   next_latents=traj.latents[[j + 1 for j in steps]][:, samples].flatten(0, 1),
                   timesteps=traj.timesteps[steps].repeat_interleave(n).to(device),
                   cond=traj.cond[samples].repeat(len(steps), 1, 1),
                   uncond=uncond_one.expand(n * len(steps), -1, -1),
                   old_log_probs=traj.log_probs[steps][:, samples].flatten(),
                   advantages=advantages[samples].repeat(len(steps)))


def rl_step_loss(unet: Any, policy: DDIMPolicy, batch: RLMinibatch, cfg: RLConfig, base_unet: Any = None
                 ) -> tuple[torch.Tensor, dict]:
    """PPO-clipped policy-gradient loss averaged over the rows of ``batch`` (plus DPOK's KL penalty when
    ``cfg.kl_coef > 0``; ``base_unet`` is then a context factory that switches the adapters off).

    Returns the scalar loss and ``{"clipfrac", "kl"}`` (``kl`` is NaN without the penalty).
    """
    out = guided_output(unet, batch.latents, batch.timesteps, batch.cond, batch.uncond, cfg.sampling.guidance_scale)
    mean, std = policy.step_distribution(out, batch.timesteps, batch.latents)      # (B, C, H, W), (B, 1, 1, 1)
    log_prob = policy.log_prob(batch.next_latents, mean, std)                      # (B,)
    ratio = torch.exp(log_prob - batch.old_log_probs)
    unclipped = -batch.advantages * ratio
    clipped = -batch.advantages * torch.clamp(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    stats = {"clipfrac": float((torch.abs(ratio - 1) > cfg.clip_range).float().mean()), "kl": float("nan")}
    if cfg.kl_coef > 0:
        with torch.no_grad(), base_unet():
            base_out = guided_output(unet, batch.latents, batch.timesteps, batch.cond, batch.uncond,
                                     cfg.sampling.guidance_scale)
        base_mean, _ = policy.step_distribution(base_out, batch.timesteps, batch.latents)
        # KL between two Gaussians with the same std: |mu - mu_base|^2 / (2 std^2), per dimension.
        kl = ((mean - base_mean) ** 2).mean(dim=tuple(range(1, mean.ndim))) / (2 * std.clamp_min(1e-8).flatten() ** 2)
        loss = loss + cfg.kl_coef * kl.mean()
        stats["kl"] = float(kl.mean().detach())
    return loss, stats


def train_step_indices(policy: DDIMPolicy, min_std: float) -> list[int]:
    """Indices of the denoising steps trained on: stochastic, with std >= ``min_std``.

    Example:
        >>> from diffusers import DDPMScheduler
        >>> policy = DDIMPolicy(DDPMScheduler(prediction_type="epsilon").config, num_steps=4)
        >>> [round(s, 3) for s in policy.stds], train_step_indices(policy, 0.0), train_step_indices(policy, 0.1)
        ([0.941, 0.664, 0.01, 0.0], [0, 1, 2], [0, 1])
    """
    steps = [j for j, std in enumerate(policy.stds) if std > 0 and std >= min_std]
    if not steps:
        raise InputError(f"min_step_std={min_std} leaves no denoising step to train (step stds: "
                         + ", ".join(f"{s:.3g}" for s in policy.stds) + ")")
    return steps


def _mean_stats(stats: list[dict]) -> dict:
    """Each statistic averaged over the passes of an epoch (NaN when never measured)."""
    out = {}
    for key in ("clipfrac", "kl", "loss"):
        values = [s[key] for s in stats if key in s and not math.isnan(s[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def run_rl(config: RLConfig | dict, resume: bool = False, progress: bool = True, overwrite: bool = False,
           resume_from: str | None = None, reward: Any = None, make_evaluator: Any = None,
           truth: GroundTruth | None = None) -> Path:
    """Run RL fine-tuning; returns the run folder (``config.yaml``, ``eval.csv``, ``grids/``, ``checkpoint-*``,
    ``lora/`` (the LoRA adapter, peft/diffusers layout), ``report.html``).

    ``reward`` (a :class:`~textnorm_t2i.rewards.base.Reward` or any ``fn(images, prompts) -> scores``) replaces
    the objective built from ``config.reward``; ``make_evaluator(trainee, out)`` replaces the periodic
    evaluation (an object with ``prompts``, ``__call__(step, extra, unet)``, ``save_base`` and ``load_base``).
    """
    from tqdm.auto import tqdm

    cfg: RLConfig = as_config("rl", config)  # type: ignore[assignment]
    accelerator, run = open_accelerated_run(cfg, resume, overwrite, resume_from)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    try:
        accelerator.wait_for_everyone()
        checkpoint = run.select()
        out, streams = run.folder, RandomStreams(cfg.seed)

        # The denoising steps trained on, in groups of timesteps_per_pass that go through the UNet together.
        # Deterministic steps have no log-probability; steps with std below min_step_std are left out too (with
        # 10 steps on the embedded model the step t=100 -> 0 has std 0.006 against 0.15-0.83 for the others:
        # its ratio is clipped almost at once, and before that its gradient, ~1/std, dominates).
        # They depend on the scheduler only: checked before any model loads.
        policy = DDIMPolicy(load_scheduler_config(cfg.generator), cfg.sampling.steps, cfg.sampling.eta)
        train_steps = train_step_indices(policy, cfg.min_step_std)
        model = setup_training(cfg, accelerator.device, reward)
        unet, params, optimizer, backend = model.unet, model.params, model.optimizer, model.backend
        wrapped, optimizer = accelerator.prepare(unet, optimizer)
        tracker = PromptStatTracker(cfg.stat_tracking.buffer_size, cfg.stat_tracking.min_count)
        evaluate = main and cfg.eval.every > 0  # every = 0: no evaluation (e.g. for throughput runs)
        evaluator = None
        if evaluate:
            evaluator = make_evaluator(model, out) if make_evaluator else Evaluator(
                cfg, backend, model.objective, model.raw, model.textnorm, out, eval_prompts(cfg, truth), truth)

        start_epoch, samples_seen = 0, 0
        if checkpoint is not None:
            state = checkpoint.restore({"lora": trainable_state(unet)}, optimizer)
            start_epoch, samples_seen = state["epoch"], state["samples"]
            tracker.load(state["tracker"])
            if evaluate:
                evaluator.load_base()
        log, pool = start_logging(cfg, run, model, evaluator, main, start_epoch, checkpoint is not None,
                                  {"samples": 0, "train_reward": float("nan"), "seconds": 0.0,
                                   "clipfrac": float("nan"), "kl": float("nan")}, truth)
        batch = cfg.batch_size
        if main:
            print_accounting("rl", world, batch, f"; gradient steps per epoch: "
                             f"{cfg.inner_epochs * batch // cfg.train_batch_size}; denoising steps: "
                             f"{cfg.sampling.steps}; epochs {start_epoch}->{cfg.epochs}")

        t0 = time.time()
        uncond_one = backend.encode([""])
        base_off = adapters_off(unet)
        passes = [train_steps[i:i + cfg.timesteps_per_pass] for i in range(0, len(train_steps), cfg.timesteps_per_pass)]
        bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="rl",
                   disable=not (progress and main))
        last_checkpoint = None
        with GracefulStop() as stop:
            for epoch in bar:
                # ---------------------------------------------------------------- SAMPLING
                # The epoch's prompts are the same on every rank; each rank takes every world-th one.
                rng = streams.epoch_prompts(epoch)
                # images_per_prompt samples of each drawn prompt, so the per-prompt statistics have a group
                # to normalise within from the first epoch.
                drawn = rng.integers(0, len(pool), size=batch * world // cfg.images_per_prompt)
                global_prompts = [pool[i] for i in np.repeat(drawn, cfg.images_per_prompt)]
                prompts = global_prompts[rank::world]
                unet.eval()
                traj = sample_trajectories(backend, prompts, policy, cfg.sampling.guidance_scale,
                                           streams.rl_sampling(epoch, rank), unet=unet)
                rewards = model.objective.score(traj.images, prompts).to(accelerator.device)
                gathered = accelerator.gather(rewards).cpu().numpy()
                gathered_prompts = [p for r in range(world) for p in global_prompts[r::world]]
                advantages = tracker.update(gathered_prompts, gathered)[rank * batch:(rank + 1) * batch]
                advantages = torch.as_tensor(np.clip(advantages, -cfg.adv_clip_max, cfg.adv_clip_max),
                                             dtype=torch.float32, device=accelerator.device)

                # ---------------------------------------------------------------- TRAINING
                unet.train()
                epoch_stats: list[dict] = []
                accumulate = cfg.gradient_accumulation_steps
                for inner in range(cfg.inner_epochs):
                    order = torch.randperm(batch, generator=streams.rl_minibatch_order(epoch, rank, inner))
                    for m, lo in enumerate(range(0, batch, cfg.train_batch_size)):
                        samples = order[lo: lo + cfg.train_batch_size]
                        stepping = (m + 1) % accumulate == 0
                        for k, steps in enumerate(passes):
                            # Several denoising steps of the same samples in one UNet call: the loss is the
                            # same sum over steps, with fewer (larger) calls. Gradients are synchronised
                            # across processes only on the last pass before an optimiser step.
                            minibatch = RLMinibatch.from_trajectories(traj, samples, steps, advantages, uncond_one,
                                                                      accelerator.device)
                            last = stepping and k == len(passes) - 1
                            with nullcontext() if last else accelerator.no_sync(wrapped):
                                loss, stats = rl_step_loss(wrapped, policy, minibatch, cfg, base_unet=base_off)
                                accelerator.backward(loss * len(steps) / len(train_steps) / accumulate)
                            epoch_stats.append({**stats, "loss": float(loss.detach())})
                        if stepping:
                            norm = accelerator.clip_grad_norm_(params, cfg.grad_clip)
                            if not bool(torch.isfinite(torch.as_tensor(norm))):
                                raise run.diverged(f"in epoch {epoch + 1}", last_checkpoint)
                            optimizer.step()
                            optimizer.zero_grad(set_to_none=True)
                samples_seen += batch * world
                stats = _mean_stats(epoch_stats)
                if main:
                    bar.set_postfix(reward=f"{gathered.mean():.3f}")
                if evaluate and (epoch + 1) % cfg.eval.every == 0:
                    unet.eval()
                    log.write(evaluator(epoch + 1, {"samples": samples_seen, "train_reward": float(gathered.mean()),
                                                    "seconds": round(time.time() - t0, 2),
                                                    "clipfrac": stats["clipfrac"], "kl": stats["kl"]}, unet=unet))
                last_checkpoint = checkpoint_or_stop(
                    run, accelerator, stop, unet, optimizer, done=epoch + 1, total=cfg.epochs,
                    every=cfg.checkpoint_every, unit="rl:epoch",
                    state={"epoch": epoch + 1, "samples": samples_seen, "tracker": tracker.state()},
                    last=last_checkpoint)
        log.close()
        finish_ranks(out, unet, rank, main, samples_seen, accelerator)
        if main:
            write_run_report(out, f"RL (DDPO) on {model.objective.name}")
    finally:
        run.close()
    return out

