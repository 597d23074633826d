"""Held-out evaluation of a (fine-tuned) generator: images, every objective, gold, fidelity and KL.

Every model is sampled with the same noise (fixed seeds per chunk), with the stochastic DDIM sampler it
was trained with, so models are compared image for image. On the same pass the base model's mean of
every step is computed on the policy's own trajectory, which gives the KL from the base model exactly:
each step is a Gaussian with the same standard deviation σ_t under both models, so

    KL(p_θ || p_base) = E_τ~p_θ [ Σ_t ‖μ_θ(x_t) − μ_base(x_t)‖² / (2 σ_t²) ],

estimated by the per-trajectory sum (an unbiased single-sample estimate; its mean over images is reported).
The headline ``kl`` sums the steps with σ_t ≥ ``eval.kl_min_std``; the last stochastic step is kept apart
(``kl_last_step``): its tiny σ turns pixel changes of about one uint8 level into thousands of nats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textnorm_t2i.finetune.common import derived_seed
from textnorm_t2i.finetune.ddim import DDIMPolicy, sample_with_step_kl
from textnorm_t2i.generate.grid import to_uint8
from textnorm_t2i.world.oracle import fidelity, judge


@dataclass
class EvalImages:
    """Images of one evaluation (uint8 ``N x 3 x H x W``), their prompts, seed index and, per image, the KL over
    the steps with σ ≥ the threshold and that of the last stochastic step."""

    images: torch.Tensor
    prompts: list[str]
    sample_index: list[int]
    kl: np.ndarray
    kl_last_step: np.ndarray


def sample_with_kl(backend: Any, prompts: list[str], policy: Any, guidance_scale: float, generator: torch.Generator,
                   unet: Any = None, base: Any = None, min_std: float = 0.0
                   ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images (float ``[0, 1]``) sampled by ``unet`` with the stochastic policy; each trajectory's KL from the base
    model summed over the steps with σ ≥ ``min_std`` but the last stochastic one (with 0, the sum and the last
    step's KL add up to the exact KL), and the last stochastic step's KL alone (see
    :func:`~textnorm_t2i.finetune.ddim.sample_with_step_kl`)."""
    images, per_step = sample_with_step_kl(backend, prompts, policy, guidance_scale, generator, unet, base)
    stds = [float(s) for s in policy.stds]
    last = max((j for j, s in enumerate(stds) if s > 0), default=None)
    # The last stochastic step is always reported apart, never also in the sum.
    counted = [j for j, s in enumerate(stds) if s > 0 and s >= min_std and j != last]
    last_kl = per_step[:, last] if last is not None else np.zeros(len(prompts))
    return images, per_step[:, counted].sum(axis=1), last_kl


def sample_eval(backend: Any, prompts: list[str], samples_per_prompt: int, steps: int, guidance_scale: float,
                seed: int, unet: Any = None, base: Any = None, chunk: int = 128, progress: bool = False,
                kl_min_std: float = 0.0, image_eta: float = 1.0) -> EvalImages:
    """``samples_per_prompt`` images per prompt, the same noise for every model (seeded per chunk). The KL is
    always the stochastic (eta = 1) policy's; with ``image_eta`` < 1 the images come from a second pass with
    that eta and the same seeds (a model trained through a deterministic sampler is judged on what it samples)."""
    from tqdm.auto import tqdm

    policy = DDIMPolicy(backend.pipe.scheduler.config, steps, eta=1.0)
    image_policy = policy if image_eta == 1.0 else DDIMPolicy(backend.pipe.scheduler.config, steps, eta=image_eta)
    flat = [(p, s) for s in range(samples_per_prompt) for p in prompts]
    images, kls, lasts = [], [], []
    for lo in tqdm(range(0, len(flat), chunk), desc="evaluate", disable=not progress, leave=False):
        part = [p for p, _ in flat[lo:lo + chunk]]
        g = torch.Generator().manual_seed(derived_seed(seed, lo))
        if image_policy is policy or base is not None:  # the base model itself has no KL to measure
            x, kl, last = sample_with_kl(backend, part, policy, guidance_scale, g, unet=unet, base=base,
                                         min_std=kl_min_std)
        else:
            kl = last = np.zeros(len(part))
        if image_policy is not policy:
            g = torch.Generator().manual_seed(derived_seed(seed, lo))
            x, _, _ = sample_with_kl(backend, part, image_policy, guidance_scale, g, unet=unet)
        images.append(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2).contiguous())
        kls.append(kl)
        lasts.append(last)
    return EvalImages(torch.cat(images), [p for p, _ in flat], [s for _, s in flat], np.concatenate(kls),
                      np.concatenate(lasts))


def judge_images(images: torch.Tensor, prompts: list[str]) -> list[dict]:
    """The oracle's verdict, reasons and fidelity of each uint8 image."""
    out = []
    for img, prompt in zip(images, prompts):
        verdict = judge(img.permute(1, 2, 0).numpy(), prompt)
        out.append({"aligned": bool(verdict.aligned), "reasons": verdict.reasons,
                    "fidelity": fidelity(verdict.objects)})
    return out


def score_uint8(scorer: Any, images: torch.Tensor, prompts: list[str], batch: int = 256) -> dict[str, np.ndarray]:
    """Every objective of ``scorer`` on uint8 images, in batches."""
    parts: list[dict] = []
    for lo in range(0, len(images), batch):
        parts.append(scorer(images[lo:lo + batch].float() / 255.0, prompts[lo:lo + batch]))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def pixel_drift(images: torch.Tensor, base: torch.Tensor) -> np.ndarray:
    """Per image, the root-mean-square difference from the base model's image of the same seed, in uint8 levels
    (0-255): how far fine-tuning moved what a reader sees, whatever the KL's per-step weights.

    Example:
        >>> a = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
        >>> pixel_drift(a, a + torch.tensor([0, 3], dtype=torch.uint8).view(2, 1, 1, 1)).tolist()
        [0.0, 3.0]
    """
    if images.shape != base.shape:
        raise ValueError(f"pixel drift needs images of one shape, got {tuple(images.shape)} and {tuple(base.shape)}")
    diff = images.double() - base.double()
    return diff.pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()


def records(ev: EvalImages, scores: dict[str, np.ndarray], subset_of: dict[str, str],
            drift: np.ndarray | None = None) -> list[dict]:
    """One record per image: prompt, subset, sample index, every score, gold verdict, reasons, fidelity, KL, and
    (when given) the pixel drift from the base model's image of the same seed."""
    verdicts = judge_images(ev.images, ev.prompts)
    out = []
    for i, (prompt, v) in enumerate(zip(ev.prompts, verdicts)):
        out.append({"prompt": prompt, "subset": subset_of.get(prompt, ""), "sample": ev.sample_index[i],
                    "scores": {k: round(float(s[i]), 6) for k, s in scores.items()},
                    "aligned": v["aligned"], "reasons": v["reasons"], "fidelity": v["fidelity"],
                    "kl": round(float(ev.kl[i]), 6), "kl_last_step": round(float(ev.kl_last_step[i]), 6)})
        if drift is not None:
            out[-1]["drift"] = round(float(drift[i]), 4)
    return out
