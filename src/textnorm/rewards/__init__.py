"""Reward models behind one interface: ``score(images, prompts) -> torch.Tensor``."""

from textnorm.rewards.base import CallableReward, DualEncoderReward, Reward, as_reward, to_tensor
from textnorm.rewards.registry import list_rewards, load_reward, register_reward

__all__ = ["CallableReward", "DualEncoderReward", "Reward", "as_reward", "list_rewards", "load_reward",
           "register_reward", "to_tensor"]
