"""Reward-gradient fine-tuning (DRaFT-K, AlignProp's randomised truncation), LoRA on the UNet.

Read top to bottom. Each optimiser step has two sections:

- SAMPLING: draw a batch of prompts and starting noise, run the DDIM sampler with the adapted UNet; the
  first ``T - K`` steps without a graph, the last ``K`` with one (each UNet call gradient-checkpointed);
- TRAINING: decode, score with a differentiable reward, and step on ``-mean reward`` (plus, with
  ``reg_coef > 0``, DPOK-style MSE between the adapted and the frozen UNet's predictions on the steps with a
  graph, which keeps the model near the base).

K = 1 is ReFL-like; ``randomized_truncation`` draws K uniformly from 1..K per step (AlignProp). The reward's
gradient reaches the pixels of a pixel-space model directly and the latents of a latent model through the
VAE decoder. Only rewards that declare ``differentiable`` may be asked for: the embedded dual encoders, CLIP,
PickScore, BLIP-2, and TextNorm or ensembles of those (the perceive presets and ImageReward/HPSv2 are not).

Every random draw comes from a named stream seeded by (seed, step, rank), so a run resumed from a
checkpoint equals an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.common import (
    adapters_off,
    checkpoint_or_stop,
    derived_seed,
    eval_prompts,
    finish_ranks,
    open_accelerated_run,
    print_accounting,
)
from textnorm_t2i.finetune.config import DraftConfig, as_config
from textnorm_t2i.finetune.ddim import DDIMPolicy, guided_output
from textnorm_t2i.finetune.evaluation import Evaluator, start_logging
from textnorm_t2i.finetune.lora import trainable_state
from textnorm_t2i.finetune.models import load_scheduler_config
from textnorm_t2i.finetune.recompute import recompute
from textnorm_t2i.finetune.report import write_run_report
from textnorm_t2i.finetune.setup import setup_training
from textnorm_t2i.finetune.truth import GroundTruth
from textnorm_t2i.objectives.factory import build_views
from textnorm_t2i.rewards.base import Reward, as_reward
from textnorm_t2i.rundir import GracefulStop

DRAFT_PROMPTS, DRAFT_NOISE, DRAFT_TRUNCATION = 11, 12, 13  # purposes of the run's random streams


def check_differentiable(reward: Reward, image_shape: tuple[int, int, int]) -> None:
    """Refuse, in one line, a reward whose score is not a differentiable function of the pixels.

    A reward that does not know (a plain callable) is tried once on a small random image.

    Example:
        >>> from textnorm_t2i.rewards.base import as_reward
        >>> check_differentiable(as_reward(lambda images, prompts: [1.0] * len(prompts)), (3, 8, 8))
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: draft needs a differentiable reward; '<lambda>' is not ...
    """
    known = reward.differentiable
    if known is None:
        x = torch.rand(1, *image_shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        try:
            out = reward.score(x, ["a red circle"], grad=True)
        except InputError:
            raise
        except Exception as e:  # the callable failed on a probe image: say which, not a traceback
            raise InputError(f"draft: reward {reward.name!r} failed on a probe image ({type(e).__name__}: {e})"
                             ) from None
        known = out.requires_grad
    if not known:
        raise InputError(f"draft needs a differentiable reward; {reward.name!r} is not (its score has no gradient "
                         "with respect to the pixels); use rl or sft for it, or a differentiable reward such as "
                         "shapes-clip-a, shapes-clip-b, shapes-pref, clip or their TextNorm")


def draft_sample(backend: Any, unet: Any, prompts: list[str], policy: DDIMPolicy, guidance_scale: float,
                 generator: torch.Generator, k: int, checkpointing: bool = True
                 ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Sample one image per prompt; the last ``k`` steps keep their graph.

    Returns the images ``(N, 3, H, W)`` in [0, 1] (differentiable) and, per step with a graph, ``(x_t, t,
    model output)`` for the regulariser. All noise is drawn on the CPU from ``generator`` (the same draws for
    every ``k``), so a step's samples depend only on the seed and the weights.
    """
    cond = backend.encode(prompts)
    uncond = backend.encode([""] * len(prompts))
    x = torch.randn(backend.latent_shape(len(prompts)), generator=generator).to(backend.device)
    noises = [torch.randn(x.shape, generator=generator).to(x.device) for _ in policy.timesteps]
    first_grad = len(policy.timesteps) - k
    params = [p for p in unet.parameters() if p.requires_grad]
    distributed = isinstance(unet, torch.nn.parallel.DistributedDataParallel)
    graph_steps = []
    for j, t in enumerate(policy.timesteps):
        t = t.to(backend.device)
        if j == first_grad and j > 0:
            x = x.clone()  # out of inference mode: the steps with a graph save it for the backward pass
        with torch.inference_mode() if j < first_grad else nullcontext():
            if j >= first_grad and checkpointing:
                # DDP prepares its gradient reduction in its forward: it must not run again inside the backward pass
                out = (checkpoint(guided_output, unet, x, t, cond, uncond, guidance_scale, use_reentrant=False)
                       if distributed else
                       recompute(lambda *a: guided_output(unet, *a, guidance_scale), (x, t, cond, uncond), params))
            else:
                out = guided_output(unet, x, t, cond, uncond, guidance_scale)
            mean, std = policy.step_distribution(out, t, x)
            if j >= first_grad:
                graph_steps.append((x, t, out))
            x = mean + std * noises[j]
    return backend.decode(x, grad=True), graph_steps


def regulariser(unet: Any, graph_steps: list, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float
                ) -> torch.Tensor:
    """Mean squared difference between the adapted and the frozen UNet's guided predictions on the steps with a
    graph (DPOK's and the authors' SFT regulariser, on the sampled trajectory)."""
    off = adapters_off(unet)
    terms = []
    for x, t, out in graph_steps:
        with torch.no_grad(), off():
            base = guided_output(unet, x.detach(), t, cond, uncond, guidance_scale)
        terms.append(((out - base) ** 2).mean())
    return torch.stack(terms).mean()


def run_draft(config: DraftConfig | dict, resume: bool = False, progress: bool = True, overwrite: bool = False,
              resume_from: str | None = None, reward: Any = None, make_evaluator: Any = None,
              truth: GroundTruth | None = None) -> Path:
    """Run reward-gradient fine-tuning; returns the run folder (``config.yaml``, ``eval.csv``, ``samples.jsonl``,
    ``grids/``, ``checkpoint-*``, ``lora/`` in the peft/diffusers layout, ``report.html``).

    ``reward`` (a differentiable :class:`~textnorm_t2i.rewards.base.Reward` or ``fn(images, prompts) -> scores``
    built from torch operations) replaces the objective of ``config.reward``; ``make_evaluator`` as for RL.
    """
    from tqdm.auto import tqdm

    cfg: DraftConfig = as_config("draft", config)  # type: ignore[assignment]
    # Checked before any model loads: the reward can give gradients, the truncation fits the sampler.
    policy = DDIMPolicy(load_scheduler_config(cfg.generator), cfg.sampling.steps, cfg.sampling.eta)
    if cfg.truncation_steps > cfg.sampling.steps:
        raise InputError(f"truncation_steps={cfg.truncation_steps} exceeds sampling.steps={cfg.sampling.steps}")
    # cfg.reward's models are the objective, or (beside a callable) what the evaluation logs; else nothing reads them.
    views = build_views(cfg.reward) if reward is None or cfg.eval.every > 0 else (as_reward(reward),) * 3
    if reward is None:  # a registered reward declares it; a callable is probed below, once it can be shaped
        check_differentiable(views[0], (3, 8, 8))
    accelerator, run = open_accelerated_run(cfg, resume, overwrite, resume_from)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    try:
        accelerator.wait_for_everyone()
        checkpoint = run.select()
        out = run.folder
        model = setup_training(cfg, accelerator.device, reward, views)
        unet, params, optimizer, backend = model.unet, model.params, model.optimizer, model.backend
        if reward is not None:
            check_differentiable(model.objective, tuple(backend.decode(torch.zeros(backend.latent_shape(1))).shape[1:]))
        wrapped, optimizer = accelerator.prepare(unet, optimizer)
        evaluate = main and cfg.eval.every > 0
        evaluator = None
        if evaluate:
            evaluator = make_evaluator(model, out) if make_evaluator else Evaluator(
                cfg, backend, model.objective, model.raw, model.textnorm, out, eval_prompts(cfg, truth), truth)
        start_step, samples_seen = 0, 0
        if checkpoint is not None:
            state = checkpoint.restore({"lora": trainable_state(unet)}, optimizer)
            start_step, samples_seen = state["step"], state["samples"]
            if evaluate:
                evaluator.load_base()
        log, pool = start_logging(cfg, run, model, evaluator, main, start_step, checkpoint is not None,
                                  {"samples": 0, "train_reward": float("nan"), "seconds": 0.0, "loss": float("nan"),
                                   "reg": float("nan")}, truth)
        if main:
            print_accounting("draft", world, cfg.batch_size * cfg.gradient_accumulation_steps,
                             f"; optimiser steps {start_step}->{cfg.steps}; gradient through the last "
                             f"{'1..' if cfg.randomized_truncation else ''}{cfg.truncation_steps} of "
                             f"{cfg.sampling.steps} denoising steps")

        t0 = time.time()
        uncond_one = backend.encode([""])
        bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="draft",
                   disable=not (progress and main))
        last_checkpoint = None
        with GracefulStop() as stop:
            for step in bar:
                rewards_seen, losses, regs = [], [], []
                unet.train()
                for micro in range(cfg.gradient_accumulation_steps):
                    # ---------------------------------------------------------------- SAMPLING
                    # The step's prompts are the same on every rank; each rank takes every world-th one.
                    rng = np.random.default_rng(derived_seed(cfg.seed, DRAFT_PROMPTS, step, micro))
                    drawn = rng.integers(0, len(pool), size=cfg.batch_size * world)
                    prompts = [pool[i] for i in drawn][rank::world]
                    k = cfg.truncation_steps
                    if cfg.randomized_truncation:
                        k = int(np.random.default_rng(derived_seed(cfg.seed, DRAFT_TRUNCATION, step, micro))
                                .integers(1, cfg.truncation_steps + 1))
                    g = torch.Generator().manual_seed(derived_seed(cfg.seed, DRAFT_NOISE, step, micro, rank))
                    last = micro == cfg.gradient_accumulation_steps - 1
                    with nullcontext() if last else accelerator.no_sync(wrapped), accelerator.autocast():
                        images, graph_steps = draft_sample(backend, wrapped, prompts, policy,
                                                           cfg.sampling.guidance_scale, g, k,
                                                           cfg.gradient_checkpointing)
                        # ------------------------------------------------------------ TRAINING
                        scores = model.objective.score(images, prompts, grad=True)
                        loss = -scores.mean()
                        if cfg.reg_coef > 0:
                            reg = regulariser(unet, graph_steps, backend.encode(prompts),
                                              uncond_one.expand(len(prompts), -1, -1), cfg.sampling.guidance_scale)
                            loss = loss + cfg.reg_coef * reg
                            regs.append(float(reg.detach()))
                        accelerator.backward(loss / cfg.gradient_accumulation_steps)
                    rewards_seen.append(accelerator.gather(scores.detach().float()).cpu())
                    losses.append(float(loss.detach()))
                norm = accelerator.clip_grad_norm_(params, cfg.grad_clip)
                if not bool(torch.isfinite(torch.as_tensor(norm))):
                    raise run.diverged(f"at step {step + 1}", last_checkpoint)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                samples_seen += cfg.batch_size * world * cfg.gradient_accumulation_steps
                train_reward = float(torch.cat(rewards_seen).mean())
                if main:
                    bar.set_postfix(reward=f"{train_reward:.3f}")
                if evaluate and (step + 1) % cfg.eval.every == 0:
                    unet.eval()
                    with torch.no_grad():
                        log.write(evaluator(step + 1, {
                            "samples": samples_seen, "train_reward": train_reward,
                            "seconds": round(time.time() - t0, 2), "loss": float(np.mean(losses)),
                            "reg": float(np.mean(regs)) if regs else float("nan")}, unet=unet))
                last_checkpoint = checkpoint_or_stop(
                    run, accelerator, stop, unet, optimizer, done=step + 1, total=cfg.steps, every=cfg.checkpoint_every,
                    unit="draft:step", state={"step": step + 1, "samples": samples_seen}, last=last_checkpoint)
        log.close()
        finish_ranks(out, unet, rank, main, samples_seen, accelerator)
        if main:
            write_run_report(out, f"DRaFT-{cfg.truncation_steps} on {model.objective.name}")
    finally:
        run.close()
    return out
