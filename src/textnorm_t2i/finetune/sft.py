"""Reward-weighted supervised fine-tuning: generate, keep the top q% per prompt by the reward,
fine-tune LoRA with the denoising loss (optionally weighted by reward), optionally regularised
towards the frozen base model's prediction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.common import (
    RandomStreams,
    adapters_off,
    default_device,
    eval_prompts,
    print_accounting,
    training_prompts,
    warm_caches,
)
from textnorm_t2i.finetune.config import SFTConfig, as_config
from textnorm_t2i.finetune.ddim import DDIMPolicy, sample_trajectories
from textnorm_t2i.finetune.evaluation import Evaluator, RunLog
from textnorm_t2i.finetune.lora import save_lora_folder, trainable_state
from textnorm_t2i.finetune.report import write_run_report
from textnorm_t2i.finetune.setup import setup_training
from textnorm_t2i.finetune.truth import GroundTruth, gold_verdicts
from textnorm_t2i.generate.unet_forward import guided_output, unet_output
from textnorm_t2i.io import write_json_atomic
from textnorm_t2i.rundir import GracefulStop, RunFolder, hold_point


def _by_prompt(prompts: list[str]) -> list[np.ndarray]:
    """The sample indices of each distinct prompt, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return [np.array(idx) for idx in groups.values()]


def _share(fraction: float, idx: np.ndarray) -> int:
    return max(1, int(round(fraction * len(idx))))


def select_top(prompts: list[str], rewards: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the top ``fraction`` of samples of each prompt by reward (at least one each).

    Example:
        >>> select_top(["a", "a", "a", "b", "b"], np.array([1.0, 3.0, 2.0, 0.0, 5.0]), 0.4).tolist()
        [1, 4]
    """
    keep = [idx[np.argsort(-rewards[idx], kind="stable")[:_share(fraction, idx)]] for idx in _by_prompt(prompts)]
    return np.array(sorted(np.concatenate(keep).tolist()))


_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def select_random(prompts: list[str], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random ``fraction`` of each prompt's samples (at least one each): the drift control.

    Example:
        >>> select_random(["a", "a", "b", "b"], 0.5, np.random.default_rng(0)).tolist()
        [1, 3]
    """
    keep = [rng.choice(idx, size=_share(fraction, idx), replace=False) for idx in _by_prompt(prompts)]
    return np.array(sorted(np.concatenate(keep).tolist()))


def sft_step_loss(unet: Any, noise_scheduler: Any, data_x0: torch.Tensor, cond: torch.Tensor, weights: torch.Tensor,
                  batch_size: int, g: torch.Generator, reg_coef: float = 0.0, base_off: Any = None,
                  uncond: torch.Tensor | None = None, caption_dropout: float = 0.0,
                  guidance: float | None = None) -> torch.Tensor:
    """The (weighted) denoising loss on a random minibatch of the kept samples ``data_x0`` (``cond``: their
    prompt embeddings), plus ``reg_coef`` x MSE towards the base model's prediction (``base_off`` switches
    the adapters off). Every random draw comes from the CPU generator ``g``: the same on any device.

    ``caption_dropout``: that share of the minibatch is conditioned on ``uncond`` (the empty prompt) instead.
    ``guidance``: fit the guided prediction ``u + guidance x (c - u)`` (both branches in one batched call).
    """
    device = cond.device
    idx = torch.randint(0, len(data_x0), (batch_size,), generator=g)
    x0 = data_x0[idx].to(device)
    noise = torch.randn(x0.shape, generator=g).to(device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=g).to(device)
    dropped = torch.rand(len(idx), generator=g) < caption_dropout
    xt = noise_scheduler.add_noise(x0, noise, t)
    v_pred = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(x0, noise, t) if v_pred else noise
    c = cond[idx.to(device)]
    if caption_dropout > 0 and bool(dropped.any()):
        c = torch.where(dropped.to(device)[:, None, None], uncond.expand_as(c), c)

    def predict() -> torch.Tensor:
        if guidance is None:
            return unet_output(unet, xt, t, c)
        return guided_output(unet, xt, t, c, uncond.expand_as(c), guidance)

    pred = predict()
    loss = (F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)) * weights[idx.to(device)]).mean()
    if reg_coef > 0:
        with torch.no_grad(), base_off():
            base = predict()
        loss = loss + reg_coef * F.mse_loss(pred, base)
    return loss


def select_samples(cfg: SFTConfig, prompts: list[str], rewards: np.ndarray, gold: np.ndarray | None,
                   streams: RandomStreams) -> np.ndarray:
    """The indices SFT trains on, by ``cfg.select`` (see :class:`~textnorm_t2i.finetune.config.SFTConfig`)."""
    if cfg.select == "random":
        return select_random(prompts, cfg.top_fraction, streams.sft_select())
    if cfg.select == "aligned":
        if gold is None:
            raise InputError("select: aligned needs the oracle, i.e. world prompts (counting, composition, "
                             "comprehensive); these prompts are not all world prompts")
        keep = np.flatnonzero(gold > 0.5)
        if not len(keep):
            raise InputError("select: aligned: the oracle judged none of the generated samples aligned; generate "
                             "more (samples_per_prompt) or use select: reward")
        return keep
    return select_top(prompts, rewards, cfg.top_fraction)


@dataclass
class SFTPool:
    """The samples SFT selects from: final latents, their prompts, the objective's rewards and (world prompts)
    the oracle's verdicts (1.0 aligned, else 0.0)."""

    latents: torch.Tensor
    prompts: list[str]
    rewards: np.ndarray
    gold: np.ndarray | None = None


def generate_pool(cfg: SFTConfig, backend: Any, objective: Any, train_prompts: list[str],
                  streams: RandomStreams, truth: GroundTruth | None = None) -> SFTPool:
    """``samples_per_prompt`` samples of every training prompt with the run's sampler, scored and judged."""
    policy = DDIMPolicy(backend.pipe.scheduler.config, cfg.sampling.steps, eta=cfg.sampling.eta)
    prompts = [p for p in train_prompts for _ in range(cfg.samples_per_prompt)]
    latents, rewards, verdicts = [], [], []
    with torch.no_grad():
        for lo in range(0, len(prompts), 64):
            chunk = prompts[lo: lo + 64]
            traj = sample_trajectories(backend, chunk, policy, cfg.sampling.guidance_scale, streams.sft_pool(lo))
            latents.append(traj.latents[-1].cpu())
            rewards.append(objective.score(traj.images, chunk))
            verdicts.append(gold_verdicts(truth, traj.images, chunk))  # None without a truth that judges them
    gold = None if not verdicts or any(v is None for v in verdicts) else np.concatenate(verdicts)
    return SFTPool(torch.cat(latents), prompts, torch.cat(rewards).numpy(), gold)


def run_sft(config: SFTConfig | dict, resume: bool = False, progress: bool = True, overwrite: bool = False,
            resume_from: str | None = None, reward: Any = None, pool: SFTPool | None = None,
            make_evaluator: Any = None, truth: GroundTruth | None = None) -> Path:
    """Run reward-weighted SFT; returns the run folder (``config.yaml``, ``eval.csv``, ``data.json``,
    ``checkpoint-*``, ``lora/`` (the LoRA adapter, peft/diffusers layout), ``report.html``).

    ``reward``: a reward or ``fn(images, prompts) -> scores`` replacing the config's objective; ``pool``: samples
    to select from instead of generating them (e.g. a study's shared pool); ``make_evaluator(model, out)``: an
    evaluator replacing the config's."""
    from tqdm.auto import tqdm

    cfg: SFTConfig = as_config("sft", config)  # type: ignore[assignment]
    run = RunFolder(cfg.out, cfg, resume=resume, overwrite=overwrite, resume_from=resume_from,
                    keep=cfg.checkpoints_total_limit).open()
    try:
        checkpoint = run.select()
        out, streams = run.folder, RandomStreams(cfg.seed)
        model = setup_training(cfg, default_device(), reward=reward)
        backend, unet, device = model.backend, model.unet, model.device
        noise_scheduler = model.pipe.scheduler

        # 1. Generate (or take the caller's pool) and keep the best samples (deterministic from the seed, so a
        #    resume rebuilds the same set).
        train_prompts = training_prompts(cfg, truth)
        evaluator = make_evaluator(model, out) if make_evaluator else Evaluator(
            cfg, backend, model.objective, model.raw, model.textnorm, out, eval_prompts(cfg, truth), truth)
        warm_caches(backend, [model.objective, model.raw, model.textnorm], train_prompts + evaluator.prompts)
        if pool is None:
            pool = generate_pool(cfg, backend, model.objective, train_prompts, streams, truth)
        prompts, latents_all, rewards_all, gold_all = pool.prompts, pool.latents, pool.rewards, pool.gold
        keep = select_samples(cfg, prompts, rewards_all, gold_all, streams)
        data_x0, data_prompts = latents_all[keep], [prompts[i] for i in keep]
        weights = torch.ones(len(keep))
        if cfg.weight_by_reward:
            r = torch.as_tensor(rewards_all[keep], dtype=torch.float32)
            weights = torch.softmax((r - r.mean()) / (r.std() + 1e-6), 0) * len(r)
        weights = weights.to(device)
        cond_all = backend.encode(data_prompts)
        uncond = backend.encode([""])
        how = {"reward": f"top {cfg.top_fraction:.0%} per prompt by the objective", "aligned": "judged aligned by "
               "the oracle", "random": f"a random {cfg.top_fraction:.0%} per prompt"}[cfg.select]
        print_accounting("sft", 1, len(prompts), f"; kept {len(keep)} ({how}); "
                         f"mean reward all {rewards_all.mean():.4f}, kept {rewards_all[keep].mean():.4f}; "
                         f"steps {cfg.steps} x batch {cfg.train_batch_size}")

        # 2. Fine-tune LoRA on the kept samples.
        optimizer = model.optimizer
        start = 0
        if checkpoint is not None:
            start = checkpoint.restore({"lora": trainable_state(unet)}, optimizer)["step"]
            evaluator.load_base()
        run.start()
        log = RunLog(out, report_to=cfg.log.report_to, project=cfg.log.project,
                     resume_step=start if checkpoint is not None else None, config=cfg.to_dict())
        if start == 0:
            with torch.no_grad():
                log.write(evaluator(0, {"loss": float("nan"), "seconds": 0.0}))
            evaluator.save_base()
        base_off = adapters_off(unet)
        t0 = time.time()
        last_checkpoint = None
        with GracefulStop() as stop:
            for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="sft",
                             disable=not progress):
                unet.train()
                with torch.autocast(device.type, dtype=_AUTOCAST.get(cfg.mixed_precision, torch.float32),
                                    enabled=cfg.mixed_precision != "no"):
                    loss = sft_step_loss(unet, noise_scheduler, data_x0, cond_all, weights, cfg.train_batch_size,
                                         streams.sft_step(step), cfg.reg_coef, base_off, uncond=uncond,
                                         caption_dropout=cfg.caption_dropout,
                                         guidance=cfg.sampling.guidance_scale if cfg.guided_loss else None)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.params, cfg.grad_clip)
                if not bool(torch.isfinite(norm)):
                    # The weights are still those after `step` finite steps: keep them as a checkpoint.
                    last_checkpoint = run.checkpoint(f"checkpoint-{step}", {"lora": trainable_state(unet)},
                                                     optimizer, state={"step": step}) if step else last_checkpoint
                    raise run.diverged(f"at step {step + 1}", last_checkpoint)
                optimizer.step()
                if (step + 1) % cfg.eval.every == 0 or step + 1 == cfg.steps:
                    unet.eval()
                    with torch.no_grad():
                        log.write(evaluator(step + 1, {"loss": float(loss.detach()),
                                                       "seconds": round(time.time() - t0, 2)}, unet=unet))
                hold_point(f"sft:step:{step + 1}")
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or stop.requested:
                    last_checkpoint = run.checkpoint(f"checkpoint-{step + 1}", {"lora": trainable_state(unet)},
                                                     optimizer, state={"step": step + 1})
                if stop.requested and step + 1 < cfg.steps:
                    raise run.interrupted(stop, f"after step {step + 1} of {cfg.steps}", last_checkpoint)
        log.close()
        save_lora_folder(unet, out / "lora")
        write_run_report(out, f"reward-weighted SFT on {model.objective.name}")
        write_json_atomic(out / "data.json", {
            "generated": len(prompts), "kept": len(keep), "select": cfg.select,
            "mean_reward_all": float(rewards_all.mean()), "mean_reward_kept": float(rewards_all[keep].mean()),
            "gold_all": None if gold_all is None else float(gold_all.mean()),
            "gold_kept": None if gold_all is None else float(gold_all[keep].mean())})
    finally:
        run.close()
    return out
