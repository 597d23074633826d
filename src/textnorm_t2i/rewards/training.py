"""Train an embedded reward model from its typed config, whichever kind it is (one entry for the CLI)."""

from __future__ import annotations

from pathlib import Path

from textnorm_t2i.config import Config
from textnorm_t2i.rewards.train_config import DetectTrainConfig, PrefTrainConfig, RewardTrainConfig
from textnorm_t2i.rewards.train_detect import train_detect_reward
from textnorm_t2i.rewards.train_pref import train_pref_reward
from textnorm_t2i.rewards.train_shapes import train_reward


def train_reward_model(config: Config, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Train the reward ``config`` describes (contrastive, preference or detect) into ``out``
    (default ``runs/<name>``); returns the model folder."""
    out = out or f"runs/{config.name}"  # type: ignore[attr-defined]
    if isinstance(config, DetectTrainConfig):
        return Path(train_detect_reward(config, out, overwrite=overwrite))
    if isinstance(config, PrefTrainConfig):
        return Path(train_pref_reward(config, out, overwrite=overwrite))
    if isinstance(config, RewardTrainConfig):
        return Path(train_reward(config, out, overwrite=overwrite))
    raise TypeError(f"not a reward training config: {type(config).__name__}")
