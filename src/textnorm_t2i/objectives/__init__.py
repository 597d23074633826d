"""What is optimised: the one factory that turns a :class:`~textnorm_t2i.rewards.spec.RewardSpec` into a reward
(raw, TextNorm over contrastive prompt sets, or an ensemble of those)."""

from textnorm_t2i.objectives.factory import as_spec, build_reward, build_views

__all__ = ["as_spec", "build_reward", "build_views"]
