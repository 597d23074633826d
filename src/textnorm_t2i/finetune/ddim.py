"""Stochastic DDIM sampling with per-step log-probabilities (the policy of DDPO / DPOK).

Written out here rather than patched into diffusers: one step maps x_t to a Gaussian over x_{t-1},

    mean = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma^2) * eps_hat,
    sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev),

and the log-probability of the step taken is that Gaussian's log-density (averaged over dimensions,
as ddpo-pytorch does, so that its scale does not depend on the image size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from textnorm_t2i.generate.unet_forward import guided_output


@dataclass
class Trajectory:
    """What RL needs from sampling: the latents at every step, the timesteps and log-probs."""

    latents: torch.Tensor      # (T + 1, B, ...): x_T ... x_0
    timesteps: torch.Tensor    # (T,)
    log_probs: torch.Tensor    # (T, B)
    cond: torch.Tensor         # (B, L, D) text conditioning
    images: torch.Tensor       # (B, 3, H, W) in [0, 1]


class DDIMPolicy:
    """DDIM timesteps and the per-step Gaussian of a scheduler configuration.

    Example:
        >>> from diffusers import DDPMScheduler
        >>> policy = DDIMPolicy(DDPMScheduler(prediction_type="epsilon").config, num_steps=4)
        >>> policy.timesteps.tolist()
        [750, 500, 250, 0]
    """

    def __init__(self, scheduler_config: Any, num_steps: int, eta: float = 1.0):
        from diffusers import DDIMScheduler

        # The last step lands on alphas_cumprod[0] rather than 1, so every step keeps sigma > 0 and a
        # proper log-probability (with alpha = 1 the final step would be deterministic).
        sched = DDIMScheduler.from_config(scheduler_config, set_alpha_to_one=False)
        sched.set_timesteps(num_steps)
        self.timesteps = sched.timesteps.clone()
        self.step_ratio = sched.config.num_train_timesteps // num_steps
        self.alphas_cumprod = sched.alphas_cumprod.double()
        self.final_alpha = float(sched.final_alpha_cumprod)
        self.prediction_type = sched.config.prediction_type
        self.eta = eta
        # A step whose sigma is 0 (e.g. from t = 0 with "leading" spacing) is deterministic: it has no
        # log-probability and takes no part in policy-gradient training.
        self.stds = [float(self.step_distribution(torch.zeros(1), t, torch.zeros(1))[1]) for t in self.timesteps]
        self.stochastic = [std > 0 for std in self.stds]

    def _alphas(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prev = t - self.step_ratio
        a_t = self.alphas_cumprod[t]
        a_prev = torch.where(prev >= 0, self.alphas_cumprod[prev.clamp(min=0)], torch.tensor(self.final_alpha,
                                                                                             dtype=torch.float64))
        return a_t, a_prev

    def step_distribution(self, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of x_{t-1} given x_t.

        ``t`` is a scalar tensor (one step for the whole batch; std is then a scalar) or holds one
        timestep per sample (several denoising steps in one batch; std then broadcasts over ``x``).
        """
        t = torch.as_tensor(t, device=self.alphas_cumprod.device)
        a_t, a_prev = self._alphas(t)
        # Coefficients in float64, then cast once: the same numbers for one step or many.
        var = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp_min(0)
        std = self.eta * var.sqrt()
        coef = {"sqrt_a": a_t.sqrt(), "sqrt_1ma": (1 - a_t).sqrt(), "sqrt_ap": a_prev.sqrt(),
                "dir": (1 - a_prev - std**2).clamp_min(0).sqrt(), "std": std}
        shape = (-1,) + (1,) * (x.ndim - 1) if t.ndim else ()
        c = {k: v.to(dtype=x.dtype, device=x.device).reshape(shape) for k, v in coef.items()}
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x - c["sqrt_1ma"] * eps) / c["sqrt_a"]
        elif self.prediction_type == "v_prediction":
            x0 = c["sqrt_a"] * x - c["sqrt_1ma"] * model_output
            eps = c["sqrt_a"] * model_output + c["sqrt_1ma"] * x
        else:
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        mean = c["sqrt_ap"] * x0 + c["dir"] * eps
        return mean, c["std"]

    @staticmethod
    def log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Gaussian log-density of ``sample``, averaged over all but the batch dimension (0 if deterministic)."""
        if not bool((std > 0).any()):
            return torch.zeros(sample.shape[0], dtype=sample.dtype, device=sample.device)
        lp = -((sample.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
        return lp.mean(dim=tuple(range(1, sample.ndim)))


@torch.no_grad()
def sample_trajectories(backend: Any, prompts: list[str], policy: DDIMPolicy, guidance_scale: float,
                        generator: torch.Generator, unet: Any = None) -> Trajectory:
    """Sample one image per prompt with the stochastic DDIM policy, recording every step."""
    unet = unet or backend.unet
    cond = backend.encode(prompts)
    uncond = backend.encode([""] * len(prompts))
    x = torch.randn(backend.latent_shape(len(prompts)), generator=generator).to(backend.device)
    latents, log_probs = [x], []
    for t in policy.timesteps:
        out = guided_output(unet, x, t.to(backend.device), cond, uncond, guidance_scale)
        mean, std = policy.step_distribution(out, t, x)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = mean + std * noise
        latents.append(x)
        log_probs.append(policy.log_prob(x, mean, std))
    return Trajectory(torch.stack(latents), policy.timesteps.clone(), torch.stack(log_probs), cond,
                      backend.decode(x))


@torch.no_grad()
def sample_with_step_kl(backend: Any, prompts: list[str], policy: DDIMPolicy, guidance_scale: float,
                        generator: torch.Generator, unet: Any = None, base: Any = None) -> tuple[torch.Tensor, Any]:
    """Images (float ``[0, 1]``, CPU) sampled by ``unet`` with the stochastic policy, and the KL of every step from
    the base model on the policy's own trajectory, ``(N, T)`` float64 (NumPy):

        KL_t = ‖μ_θ(x_t) − μ_base(x_t)‖² / (2 σ_t²)   (summed over pixels; 0 for a deterministic step)

    Their sum over steps is the exact KL between the two trajectory distributions. ``base`` is a context factory
    that switches the adapters off (None: the model is the base, every KL is 0).
    """
    import numpy as np

    unet = unet or backend.unet
    cond = backend.encode(prompts)
    uncond = backend.encode([""] * len(prompts))
    x = torch.randn(backend.latent_shape(len(prompts)), generator=generator).to(backend.device)
    kl = np.zeros((len(prompts), len(policy.timesteps)))
    for j, t in enumerate(policy.timesteps):
        out = guided_output(unet, x, t.to(backend.device), cond, uncond, guidance_scale)
        mean, std = policy.step_distribution(out, t, x)
        if base is not None and float(std) > 0:
            with base():
                base_out = guided_output(unet, x, t.to(backend.device), cond, uncond, guidance_scale)
            base_mean, _ = policy.step_distribution(base_out, t, x)
            kl[:, j] = (((mean - base_mean) ** 2).flatten(1).sum(1) / (2 * float(std) ** 2)).double().cpu().numpy()
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = mean + std * noise
    return backend.decode(x), kl
