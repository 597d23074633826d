"""RL fine-tuning (DDPO, with DPOK's KL penalty as an option), LoRA on the UNet.

Read top to bottom. Each epoch: sample a batch of trajectories with the stochastic DDIM policy,
score the final images, turn rewards into per-prompt normalised advantages, then take PPO-clipped
policy-gradient steps over the denoising steps. Every random draw comes from a generator seeded by
(seed, epoch, rank), so a run resumed from a checkpoint equals an uninterrupted one. Runs unchanged
under ``accelerate launch``: each process samples its share of the batch and gradients are averaged.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from textnorm.finetune.backend import DiffusionBackend
from textnorm.finetune.common import (
    DEFAULTS,
    Evaluator,
    PromptStatTracker,
    RunLog,
    adapters_off,
    build_objective,
    derived_seed,
    eval_prompts,
    merge,
    params_digest,
    print_accounting,
    training_prompts,
    warm_caches,
)
from textnorm.finetune.ddim import DDIMPolicy, guided_output, sample_trajectories
from textnorm.finetune.lora import DEFAULT_TARGETS, add_lora, save_lora, trainable_state
from textnorm.finetune.models import load_pipeline
from textnorm.io import write_json_atomic

RL_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 8,             # samples per process per epoch
    "train_batch_size": 4,       # samples per gradient step
    "inner_epochs": 1,
    "timesteps_per_pass": 1,     # denoising steps per UNet call in training: more is faster, uses more memory
    "lr": 3e-4,
    "clip_range": 1e-4,
    "adv_clip_max": 5.0,
    "kl_coef": 0.0,              # > 0: DPOK-style KL penalty to the base model
    "grad_clip": 1.0,
    "checkpoint_every": 1,
    "stat_tracking": {"buffer_size": 32, "min_count": 8},
}


def rl_step_loss(unet: Any, policy: DDIMPolicy, latents: torch.Tensor, next_latents: torch.Tensor, t: torch.Tensor,
                 cond: torch.Tensor, uncond: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                 guidance_scale: float, clip_range: float, kl_coef: float = 0.0, base_unet: Any = None
                 ) -> tuple[torch.Tensor, dict]:
    """PPO-clipped policy-gradient loss, averaged over a batch of denoising steps (plus an optional KL penalty).

    ``t`` is a scalar (every sample at the same step) or holds one timestep per sample, so that several
    denoising steps of a trajectory go through the UNet in one call.
    """
    out = guided_output(unet, latents, t, cond, uncond, guidance_scale)
    mean, std = policy.step_distribution(out, t, latents)
    log_prob = policy.log_prob(next_latents, mean, std)
    ratio = torch.exp(log_prob - old_log_probs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    stats = {"clipfrac": float((torch.abs(ratio - 1) > clip_range).float().mean()), "kl": float("nan")}
    if kl_coef > 0:
        with torch.no_grad(), base_unet():
            base_out = guided_output(unet, latents, t, cond, uncond, guidance_scale)
        base_mean, _ = policy.step_distribution(base_out, t, latents)
        # KL between two Gaussians with the same std: |mu - mu_base|^2 / (2 std^2), per dimension.
        kl = ((mean - base_mean) ** 2).mean(dim=tuple(range(1, mean.ndim))) / (2 * std.clamp_min(1e-8).flatten() ** 2)
        loss = loss + kl_coef * kl.mean()
        stats["kl"] = float(kl.mean().detach())
    return loss, stats


def run_rl(config: dict, resume: bool = False, progress: bool = True) -> Path:
    """Run RL fine-tuning; returns the run folder (``eval.csv``, ``grids/``, ``checkpoint-*``, ``lora.safetensors``)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = merge(merge(DEFAULTS, RL_DEFAULTS), config)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    out = Path(cfg["out"])
    if main:
        out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["seed"])

    pipe = load_pipeline(cfg["generator"])
    pipe.to(accelerator.device)
    backend = DiffusionBackend(pipe)
    unet = backend.unet
    params = add_lora(unet, cfg["lora"]["rank"], cfg["lora"]["alpha"],
                      tuple(cfg["lora"]["targets"] or DEFAULT_TARGETS), seed=seed)
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"])
    wrapped, optimizer = accelerator.prepare(unet, optimizer)
    objective, raw, normed = build_objective(cfg)
    tracker = PromptStatTracker(**cfg["stat_tracking"])
    policy = DDIMPolicy(pipe.scheduler.config, cfg["sampling"]["steps"], cfg["sampling"]["eta"])
    guidance = cfg["sampling"]["guidance_scale"]
    log = RunLog(out, enabled=main, tensorboard=cfg["log"]["tensorboard"], resume=resume)
    evaluate = main and cfg["eval"]["every"] > 0  # every <= 0: no evaluation (e.g. for throughput runs)
    evaluator = Evaluator(cfg, backend, objective, raw, normed, out) if evaluate else None

    start_epoch, samples_seen = 0, 0
    if resume and (ckpt := latest_checkpoint(out)) is not None:
        state = load_checkpoint(ckpt, {"lora": trainable_state(unet)}, optimizer)
        start_epoch, samples_seen = state["epoch"], state["samples"]
        tracker.load(state["tracker"])
        if evaluate:
            log.truncate_after(start_epoch)
            evaluator.base_images = torch.load(out / "base_eval.pt", weights_only=True)
    pool = training_prompts(cfg)
    warm_caches(backend, [objective, raw, normed], pool + (eval_prompts(cfg) if evaluate else []))
    batch = cfg["batch_size"]
    if main:
        print_accounting("rl", cfg, world, batch, f"; gradient steps per epoch: "
                         f"{cfg['inner_epochs'] * -(-batch // cfg['train_batch_size'])}; denoising steps: "
                         f"{cfg['sampling']['steps']}; epochs {start_epoch}->{cfg['epochs']}")
    if evaluate and start_epoch == 0:
        with torch.no_grad():
            log.write(evaluator(0, {"samples": 0, "train_reward": float("nan"), "seconds": 0.0,
                                    "clipfrac": float("nan"), "kl": float("nan")}))
        torch.save(evaluator.base_images, out / "base_eval.pt")

    t0 = time.time()
    uncond_one = backend.encode([""])
    base_off = adapters_off(unet)
    # The denoising steps trained on (deterministic ones have no log-probability), in groups of
    # timesteps_per_pass that go through the UNet together.
    train_steps = [j for j, stochastic in enumerate(policy.stochastic) if stochastic]
    n_steps, per_pass = len(train_steps), max(1, int(cfg["timesteps_per_pass"]))
    passes = [train_steps[i:i + per_pass] for i in range(0, n_steps, per_pass)]
    bar = tqdm(range(start_epoch, cfg["epochs"]), initial=start_epoch, total=cfg["epochs"], desc="rl",
               disable=not (progress and main))
    for epoch in bar:
        # The epoch's prompts are the same on every rank; each rank takes every world-th one.
        rng = np.random.default_rng(derived_seed(seed, epoch))
        global_prompts = [pool[i] for i in rng.integers(0, len(pool), size=batch * world)]
        prompts = global_prompts[rank::world]
        unet.eval()
        traj = sample_trajectories(backend, prompts, policy, guidance,
                                   torch.Generator().manual_seed(derived_seed(seed, epoch, rank, 1)), unet=unet)
        rewards = objective.score(traj.images, prompts).to(accelerator.device)
        gathered = accelerator.gather(rewards).cpu().numpy()
        gathered_prompts = [p for r in range(world) for p in global_prompts[r::world]]
        advantages = tracker.update(gathered_prompts, gathered)[rank * batch:(rank + 1) * batch]
        advantages = torch.as_tensor(np.clip(advantages, -cfg["adv_clip_max"], cfg["adv_clip_max"]),
                                     dtype=torch.float32, device=accelerator.device)

        unet.train()
        stats: dict = {"clipfrac": float("nan"), "kl": float("nan")}
        for inner in range(cfg["inner_epochs"]):
            g = torch.Generator().manual_seed(derived_seed(seed, epoch, rank, 2, inner))
            order = torch.randperm(batch, generator=g)
            for lo in range(0, batch, cfg["train_batch_size"]):
                idx = order[lo: lo + cfg["train_batch_size"]]
                n = len(idx)
                for k, steps in enumerate(passes):
                    # Several denoising steps of the same samples in one UNet call: the loss is the same
                    # sum over steps, with far fewer (and larger) calls. Gradients are synchronised across
                    # processes only on the last pass.
                    sync = accelerator.no_sync(wrapped) if k < len(passes) - 1 else nullcontext()
                    with sync:
                        loss, stats = rl_step_loss(
                            wrapped, policy, traj.latents[steps][:, idx].flatten(0, 1),
                            traj.latents[[j + 1 for j in steps]][:, idx].flatten(0, 1),
                            traj.timesteps[steps].repeat_interleave(n).to(accelerator.device),
                            traj.cond[idx].repeat(len(steps), 1, 1), uncond_one.expand(n * len(steps), -1, -1),
                            traj.log_probs[steps][:, idx].flatten(), advantages[idx].repeat(len(steps)), guidance,
                            cfg["clip_range"], cfg["kl_coef"], base_unet=base_off)
                        accelerator.backward(loss * len(steps) / n_steps)
                accelerator.clip_grad_norm_(params, cfg["grad_clip"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        samples_seen += batch * world
        if main:
            bar.set_postfix(reward=f"{gathered.mean():.3f}")
        if evaluate and (epoch + 1) % cfg["eval"]["every"] == 0:
            unet.eval()
            log.write(evaluator(epoch + 1, {"samples": samples_seen, "train_reward": float(gathered.mean()),
                                            "seconds": round(time.time() - t0, 2), **stats}))
        if (epoch + 1) % cfg["checkpoint_every"] == 0 or epoch + 1 == cfg["epochs"]:
            accelerator.wait_for_everyone()
            if main:
                save_checkpoint(out / f"checkpoint-{epoch + 1}", {"lora": trainable_state(unet)}, optimizer,
                                state={"epoch": epoch + 1, "samples": samples_seen, "tracker": tracker.state()})
    _finish(out, unet, rank, main, samples_seen, accelerator)
    return out


def _finish(out: Path, unet: Any, rank: int, main: bool, samples_seen: int, accelerator: Any) -> None:
    """Write each rank's weight digest (sync check) and, on the main process, the final LoRA weights."""
    accelerator.wait_for_everyone()
    state = trainable_state(unet)
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ranks" / f"rank{rank}.json",
                      {"digest": params_digest(state), "samples_seen": samples_seen})
    if main:
        save_lora(unet, out / "lora.safetensors")
    accelerator.wait_for_everyone()
