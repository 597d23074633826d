"""The typed config of ``textnorm train reward`` (torch-free, so a bad config fails at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textnorm.config import Config, option
from textnorm.errors import InputError


@dataclass
class RewardModelConfig(Config):
    """The architecture of an embedded proxy reward."""

    arch: Literal["cnn-bow", "cnn-transformer"] = option("cnn-bow", "text tower: bag of words or a small transformer")
    dim: int = option(64, "embedding width", min=4)
    image_widths: list[int] = option([32, 64, 128], "CNN channels per stage")
    text_layers: int = option(2, "transformer layers (cnn-transformer only)", min=1)

    def check(self) -> None:
        if not self.image_widths or any(w < 1 for w in self.image_widths):
            raise InputError("model.image_widths: give positive channel counts")


@dataclass
class RewardTrainConfig(Config):
    """Training an embedded proxy reward on rendered scenes with realistically noisy captions."""

    name: str = option("shapes-clip-a", "the reward's name (written into its config.json)")
    seed: int = option(0, "seed of the initialisation and the batches")
    steps: int = option(1500, "optimisation steps", min=1)
    batch_size: int = option(128, "scenes per step (the contrastive batch)", min=2)
    lr: float = option(2e-3, "peak learning rate (AdamW, warm-up then cosine)", min=0, min_exclusive=True)
    weight_decay: float = option(0.01, "AdamW weight decay", min=0)
    count_noise: float = option(1 / 3, "share of captions whose count is omitted, vague or wrong", min=0, max=1)
    color_drop: float = option(0.3, "share of objects described without their colour", min=0, max=1)
    object_drop: float = option(0.15, "share of multi-object captions that leave one object out", min=0, max=1)
    relation_rate: float = option(0.25, "share of two-object captions that state their relation", min=0, max=1)
    log_every: int = option(50, "write a train_log.csv row every this many steps", min=1)
    model: RewardModelConfig = option(RewardModelConfig(), "architecture")

    def check(self) -> None:
        if not self.name.strip():
            raise InputError("name: give the reward a name")
