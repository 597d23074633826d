"""Fine-tuning from Python, in the style of trl and diffusers' training scripts.

``BestOfN``, ``SFTTrainer``, ``RLTrainer`` and ``DraftTrainer`` take a config (a typed config object, a dict
of its keys or a YAML path), an optional ``reward`` -- any :class:`~textnorm_t2i.rewards.base.Reward`, or any callable
``fn(images, prompts) -> scores`` (images: ``N x 3 x H x W`` in [0, 1]) -- that replaces the config's
objective, and optional ``prompts`` that replace the config's training prompts. ``train()`` runs and
returns the run folder (``eval.csv``, ``samples.jsonl``, ``report.html``, the LoRA adapter in ``lora/``).
The config is checked when the trainer is built, before any model loads.

Example (the embedded generator; a reward that likes red):
    >>> import tempfile
    >>> def redness(images, prompts):
    ...     return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))
    >>> trainer = RLTrainer({"out": tempfile.mkdtemp() + "/run", "epochs": 1, "batch_size": 2,
    ...                      "train_batch_size": 2, "sampling": {"steps": 2}, "eval": {"n_prompts": 2, "steps": 2}},
    ...                     reward=redness, prompts=["a red circle", "two blue squares"], progress=False)
    >>> folder = trainer.train()  # doctest: +ELLIPSIS
    [rl] ...
    >>> sorted(p.name for p in folder.iterdir() if p.suffix in (".csv", ".html", ".jsonl"))
    ['eval.csv', 'report.html', 'samples.jsonl']
    >>> (folder / "lora" / "adapter_config.json").is_file()
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from textnorm_t2i.config import read_yaml
from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.bon import run_bon
from textnorm_t2i.finetune.config import BestOfNConfig, DraftConfig, FinetuneConfig, RLConfig, SFTConfig, as_config
from textnorm_t2i.finetune.draft import run_draft
from textnorm_t2i.finetune.rl import run_rl
from textnorm_t2i.finetune.sft import run_sft
from textnorm_t2i.finetune.truth import GroundTruth
from textnorm_t2i.rewards.base import Reward, as_reward, check_prompts
from textnorm_t2i.world.truth import WorldTruth

WORLD = WorldTruth()  # the embedded world's oracle and prompts: the default ground truth

__all__ = ["BestOfN", "SFTTrainer", "RLTrainer", "DraftTrainer", "BestOfNConfig", "SFTConfig", "RLConfig",
           "DraftConfig"]


class _Trainer:
    METHOD = ""

    def __init__(self, config: FinetuneConfig | dict | str | os.PathLike | None = None,
                 reward: Reward | Callable | None = None, prompts: Sequence[str] | None = None,
                 progress: bool = True, overwrite: bool = False, truth: GroundTruth | None = WORLD):
        if config is None:
            data: dict = {}
        elif isinstance(config, (str, os.PathLike)):
            data = read_yaml(Path(config))
        elif isinstance(config, FinetuneConfig):
            data = config.to_dict()
        elif isinstance(config, dict):
            data = dict(config)
        else:
            raise InputError(f"config must be a config object, a dict or a YAML path, got {type(config).__name__}")
        data.setdefault("method", self.METHOD)
        if prompts is not None and not isinstance(data.get("prompts") or {}, dict):
            raise InputError(f"config: prompts must be a mapping of keys to values, got {data['prompts']!r:.80}")
        if prompts is not None:
            check_prompts(prompts)  # a bare string is one prompt, not a list of characters: refused
            data["prompts"] = {**(data.get("prompts") or {}), "list": list(prompts)}
        self.config = as_config(self.METHOD, data)  # checked here: a bad key fails before any model loads
        if reward is not None:
            reward = as_reward(reward)
        self.reward = reward
        self.progress, self.overwrite = progress, overwrite
        self.truth = truth  # judges the evaluation images and draws subset prompts (None: no gold columns)

    def train(self, resume: bool = False) -> Path:
        """Run (or, with ``resume``, continue) the fine-tuning; returns the run folder."""
        raise NotImplementedError


class BestOfN(_Trainer):
    """Best-of-n sampling (no weights change): the over-optimisation curve of a reward."""

    METHOD = "bon"

    def train(self, resume: bool = False) -> Path:
        return run_bon(self.config, progress=self.progress, overwrite=self.overwrite, reward=self.reward,
                       truth=self.truth)


class SFTTrainer(_Trainer):
    """Reward-weighted SFT: LoRA fine-tuning on the best of the model's own samples by the reward."""

    METHOD = "sft"

    def train(self, resume: bool = False) -> Path:
        return run_sft(self.config, resume=resume, progress=self.progress, overwrite=self.overwrite,
                       reward=self.reward, truth=self.truth)


class RLTrainer(_Trainer):
    """RL (DDPO with PPO clipping; DPOK's KL penalty with ``kl_coef > 0``) with LoRA."""

    METHOD = "rl"

    def train(self, resume: bool = False) -> Path:
        return run_rl(self.config, resume=resume, progress=self.progress, overwrite=self.overwrite,
                      reward=self.reward, truth=self.truth)


class DraftTrainer(_Trainer):
    """Reward-gradient fine-tuning (DRaFT-K, AlignProp's randomised truncation) with LoRA; the reward must be
    differentiable (a callable built from torch operations on the image tensor qualifies)."""

    METHOD = "draft"

    def train(self, resume: bool = False) -> Path:
        return run_draft(self.config, resume=resume, progress=self.progress, overwrite=self.overwrite,
                         reward=self.reward, truth=self.truth)
