"""What SFT and RL set up the same way: the pipeline on its device, LoRA, the optimiser and the rewards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from textnorm_t2i.finetune.backend import DiffusionBackend
from textnorm_t2i.finetune.lora import DEFAULT_TARGETS, add_lora
from textnorm_t2i.finetune.models import load_pipeline
from textnorm_t2i.objectives.factory import build_views
from textnorm_t2i.rewards.base import Reward, as_reward


@dataclass
class Trainee:
    """A pipeline ready to fine-tune: its backend, the LoRA-adapted UNet and its trainable parameters,
    the optimiser, and the three rewards every run logs (objective, raw, TextNorm of the raw)."""

    pipe: Any
    backend: Any
    unet: Any
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    objective: Reward
    raw: Reward
    textnorm: Reward
    device: torch.device


def setup_training(cfg: Any, device: torch.device, reward: Any = None,
                   views: tuple[Reward, Reward, Reward] | None = None) -> Trainee:
    """Load ``cfg.generator`` onto ``device``, add LoRA (seeded by ``cfg.seed``), build AdamW at ``cfg.lr``
    and the rewards of ``cfg.reward`` (through the one reward factory, unless already built: ``views``);
    ``reward`` (a reward or a callable ``fn(images, prompts) -> scores``) replaces the objective."""
    objective, raw, normed = views or build_views(cfg.reward)  # a bad reward fails before the pipeline loads
    if reward is not None:
        objective = as_reward(reward)
    pipe = load_pipeline(cfg.generator)
    pipe.to(device)
    backend = DiffusionBackend(pipe)
    params = add_lora(backend.unet, cfg.lora.rank, cfg.lora.alpha, tuple(cfg.lora.targets or DEFAULT_TARGETS),
                      seed=cfg.seed)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    return Trainee(pipe, backend, backend.unet, params, optimizer, objective, raw, normed, device)
