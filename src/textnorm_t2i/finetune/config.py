"""The typed configs of the fine-tuning methods (``textnorm finetune --method bon|sft|rl|draft``).

:class:`FinetuneConfig` holds what every method shares (generator, prompts, reward, sampling, LoRA,
evaluation, logging, checkpoints); :class:`BestOfNConfig`, :class:`SFTConfig` and :class:`RLConfig` add
their own keys and consistency checks, in the style of trl's ``DDPOConfig``. ``textnorm finetune
--method M --print-config`` prints every key with its default and help.

Example:
    >>> cfg = load_finetune_config("rl", None, ["epochs=3", "lr=1e-4"])
    >>> cfg.epochs, cfg.lr, cfg.reward.name
    (3, 0.0001, 'shapes-clip-a')
    >>> load_finetune_config("rl", None, ["epochz=3"])
    Traceback (most recent call last):
    ...
    textnorm_t2i.errors.InputError: --set epochz=3: unknown key 'epochz' (did you mean 'epochs'?)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from textnorm_t2i.config import MAX_SEED, Config, load_config, option, read_yaml
from textnorm_t2i.errors import InputError
from textnorm_t2i.rewards.spec import RewardSpec

SUBSETS = ("counting", "composition", "comprehensive")


@dataclass
class PromptsConfig(Config):
    """The training prompts: an explicit list, or prompts sampled from world subsets."""

    subsets: list[Literal["counting", "composition", "comprehensive"]] = option(
        ["counting", "composition"], "world subsets to sample training prompts from")
    n: int = option(16, "prompts sampled per subset (a subset has a few hundred distinct scenes)", min=1, max=1000)
    seed: int = option(0, "seed of the prompt sampling", min=0, max=MAX_SEED)
    list: list[str] | None = option(None, "explicit training prompts (replace the sampled ones)")

    def check(self) -> None:
        if self.list is not None and (not self.list or any(not p.strip() for p in self.list)):
            raise InputError("prompts.list: give non-empty prompts, or leave it out")
        if self.list is None and not self.subsets:
            raise InputError("prompts: give prompts.list or at least one of prompts.subsets")


@dataclass
class SamplingConfig(Config):
    """How training samples are drawn (stochastic DDIM)."""

    steps: int = option(10, "DDIM steps", min=1, max=1000)
    guidance_scale: float = option(3.0, "classifier-free guidance scale", min=0, max=100)
    eta: float = option(1.0, "DDIM eta: 0 deterministic, 1 DDPM-like noise", min=0, max=1)


@dataclass
class LoraConfig(Config):
    """The LoRA adapter on the UNet."""

    rank: int = option(4, "LoRA rank", min=1, max=1024)
    alpha: float = option(4.0, "LoRA alpha (scale = alpha / rank)", min=0, min_exclusive=True)
    targets: list[str] | None = option(None, "module names to adapt (default: attention, feed-forward and "
                                       "ResNet convolutions present in the UNet)")


@dataclass
class EvalConfig(Config):
    """Evaluation on fixed prompts and seeds, deterministic sampling (eta = 0)."""

    every: int = option(1, "evaluate every this many epochs (RL) or steps (SFT); RL only: 0 = never",
                        min=0, mutable_on_resume=True)
    prompts: list[str] | None = option(None, "explicit evaluation prompts (default: n_prompts of the training pool)")
    n_prompts: int = option(8, "evaluation prompts drawn from the training pool (or, held_out, per subset of "
                            "prompts.subsets)", min=1, max=1000)
    held_out: bool = option(False, "draw the evaluation prompts from prompts.subsets with eval.seed, leaving out the "
                            "training prompts (what over-optimisation is measured on)")
    train_prompts: int = option(0, "also evaluate this many training prompts (fresh noise, the same images per "
                                "prompt): their columns are prefixed train_ (what the paper evaluates on)", min=0,
                                max=1000)
    images_per_prompt: int = option(1, "images per evaluation prompt (fixed noise each; more images, smaller "
                                    "standard errors)", min=1, max=64)
    seed: int = option(1234, "seed of the evaluation noise and prompt draw", min=0, max=MAX_SEED)
    steps: int = option(20, "DDIM steps at evaluation", min=1, max=1000)
    kl_min_std: float = option(0.05, "kl_base sums the KL of the stochastic (eta = 1) policy from the base over the "
                               "denoising steps with sigma >= this; the last stochastic step is logged apart "
                               "(kl_last_step): its tiny sigma makes a one-level pixel change cost thousands of "
                               "nats", min=0)


TRACKERS = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb"}


@dataclass
class LogConfig(Config):
    """Where evaluation rows go (``report_to``, as in diffusers and trl): eval.csv always, plus accelerate's
    TensorBoard or Weights & Biases trackers when named."""

    report_to: list[str] = option(["csv"], "trackers: csv (always written), tensorboard, wandb "
                                  "(wandb honours WANDB_MODE=offline)", mutable_on_resume=True)
    project: str = option("textnorm", "project name the trackers file the run under", mutable_on_resume=True)

    def check(self) -> None:
        import importlib.util

        for name in self.report_to:
            if name not in TRACKERS:
                raise InputError(f"log.report_to: unknown tracker {name!r} (known: {', '.join(TRACKERS)})")
            module = TRACKERS[name]
            if module and importlib.util.find_spec(module) is None:
                raise InputError(f"log.report_to: {name} is not installed (pip install 'textnorm-t2i[{name}]', or "
                                 f"drop it from log.report_to)")


@dataclass
class FinetuneConfig(Config):
    """What every fine-tuning method shares."""

    method: str = option("", "the method this config is for (bon, sft, rl or draft); checked against --method")
    seed: int = option(0, "seed of every random stream of the run", min=0, max=MAX_SEED)
    generator: str = option("shapes", "'shapes' (the shipped embedded model) or a diffusers pipeline folder")
    out: str = option("runs/finetune", "run folder (config, eval.csv, grids, checkpoints, LoRA weights)",
                      mutable_on_resume=True)
    prompts: PromptsConfig = option(PromptsConfig(), "training prompts")
    reward: RewardSpec = option(RewardSpec(), "the reward to optimise (one, or an ensemble; raw or TextNorm)")
    sampling: SamplingConfig = option(SamplingConfig(), "sampling of training images")
    lora: LoraConfig = option(LoraConfig(), "the LoRA adapter")
    eval: EvalConfig = option(EvalConfig(), "periodic evaluation")
    log: LogConfig = option(LogConfig(), "logging")
    checkpoint_every: int = option(1, "write a checkpoint every this many epochs (RL) or steps (SFT)", min=1,
                                   mutable_on_resume=True)
    mixed_precision: Literal["no", "fp16", "bf16"] = option(
        "no", "autocast of training passes (fp16 needs a GPU; bf16 also runs on CPUs)", mutable_on_resume=True)
    checkpoints_total_limit: int | None = option(None, "keep only the newest this many checkpoints", min=1,
                                                 mutable_on_resume=True)

    METHOD = ""

    def check(self) -> None:
        if self.mixed_precision == "fp16":
            import torch

            if not torch.cuda.is_available():
                raise InputError("mixed_precision: fp16 needs a GPU (use bf16 or no on a CPU)")
        if self.method and self.method != self.METHOD:
            raise InputError(f"method: this is a {self.method} config, but the run is {self.METHOD} "
                             f"(use --method {self.method}, or another config)")
        if not self.out.strip():
            raise InputError("out: give a run folder")


@dataclass
class BestOfNConfig(FinetuneConfig):
    """Best-of-n: the over-optimisation curve of a reward."""

    n_max: int = option(16, "samples drawn per prompt", min=1, max=4096)
    ns: list[int] = option([1, 2, 4, 8, 16], "the n of each best-of-n point (each must divide n_max)")

    METHOD = "bon"

    def check(self) -> None:
        super().check()
        if not self.ns:
            raise InputError("ns: give at least one n")
        bad = [n for n in self.ns if n < 1 or n > self.n_max or self.n_max % n]
        if bad:
            raise InputError(f"ns: {bad} do not divide n_max={self.n_max} (each n must be 1..n_max and divide it)")


@dataclass
class SFTConfig(FinetuneConfig):
    """Reward-weighted supervised fine-tuning on the top samples per prompt."""

    samples_per_prompt: int = option(16, "samples generated per training prompt", min=1)
    top_fraction: float = option(0.1, "fraction of each prompt's samples kept (at least one)", min=0,
                                 min_exclusive=True, max=1)
    select: Literal["reward", "aligned", "random"] = option(
        "reward", "which samples are kept: reward = the top_fraction of each prompt's samples by the objective; "
        "aligned = every sample the oracle judges aligned (the positive control; world prompts only); random = a "
        "random top_fraction of each prompt's samples (the drift control)")
    weight_by_reward: bool = option(False, "weight the denoising loss by a softmax of the standardised rewards")
    caption_dropout: float = option(0.0, "share of training examples given the empty prompt (trains the "
                                    "unconditional branch too, as base training did)", min=0, max=1)
    guided_loss: bool = option(False, "fit the classifier-free guided prediction at sampling.guidance_scale (the "
                               "sampler actually used) instead of the conditional one")
    steps: int = option(100, "optimisation steps", min=1, mutable_on_resume=True)
    train_batch_size: int = option(16, "samples per gradient step", min=1)
    lr: float = option(1e-4, "learning rate (AdamW)", min=0, min_exclusive=True)
    reg_coef: float = option(0.0, "> 0: MSE towards the frozen base model's prediction", min=0)
    grad_clip: float = option(1.0, "gradient norm clip", min=0, min_exclusive=True)
    checkpoint_every: int = option(50, "write a checkpoint every this many steps", min=1, mutable_on_resume=True)

    METHOD = "sft"

    def check(self) -> None:
        super().check()
        if self.eval.every < 1:
            raise InputError(f"eval.every: SFT evaluates during training; must be >= 1, got {self.eval.every}")


@dataclass
class StatTrackingConfig(Config):
    """Per-prompt reward normalisation (DDPO)."""

    buffer_size: int = option(32, "rewards kept per prompt", min=1)
    min_count: int = option(8, "below this many, normalise by the batch's statistics instead", min=1)


@dataclass
class RLConfig(FinetuneConfig):
    """RL fine-tuning: DDPO with PPO clipping, optionally DPOK's KL penalty."""

    epochs: int = option(10, "epochs (sampling + training rounds)", min=1, mutable_on_resume=True)
    batch_size: int = option(8, "samples per process per epoch", min=1)
    train_batch_size: int = option(4, "samples per minibatch (must divide batch_size)", min=1)
    gradient_accumulation_steps: int = option(1, "minibatches whose gradients are summed (averaged) before each "
                                              "optimiser step; must divide batch_size / train_batch_size", min=1)
    train_prompts: int = option(0, "also evaluate this many training prompts (fresh noise, the same images per "
                                "prompt): their columns are prefixed train_ (what the paper evaluates on)", min=0,
                                max=1000)
    images_per_prompt: int = option(1, "samples of each epoch prompt (divides batch_size): > 1 gives per-prompt "
                                    "advantages from the first epoch, as in DDPO", min=1)
    inner_epochs: int = option(1, "passes over each epoch's samples", min=1)
    timesteps_per_pass: int = option(1, "denoising steps per UNet call in training: more is faster, uses more "
                                     "memory (same loss and gradient)", min=1)
    lr: float = option(3e-4, "learning rate (AdamW)", min=0, min_exclusive=True)
    clip_range: float = option(1e-4, "PPO ratio clip range", min=0, min_exclusive=True)
    adv_clip_max: float = option(5.0, "advantages are clipped to +-this", min=0, min_exclusive=True)
    kl_coef: float = option(0.0, "> 0: DPOK-style KL penalty to the base model", min=0)
    min_step_std: float = option(0.0, "denoising steps whose policy std is below this take no part in training: "
                                 "a near-deterministic step's log-probability ratio is hypersensitive and its "
                                 "gradient swamps the others' (0: train every stochastic step)", min=0)
    grad_clip: float = option(1.0, "gradient norm clip", min=0, min_exclusive=True)
    stat_tracking: StatTrackingConfig = option(StatTrackingConfig(), "per-prompt reward normalisation")

    METHOD = "rl"

    def check(self) -> None:
        super().check()
        if self.batch_size % self.train_batch_size:
            raise InputError(f"train_batch_size={self.train_batch_size} does not divide "
                             f"batch_size={self.batch_size}")
        if (self.batch_size // self.train_batch_size) % self.gradient_accumulation_steps:
            raise InputError(f"gradient_accumulation_steps={self.gradient_accumulation_steps} does not divide the "
                             f"{self.batch_size // self.train_batch_size} minibatches of an epoch "
                             "(batch_size / train_batch_size)")
        if self.batch_size % self.images_per_prompt:
            raise InputError(f"images_per_prompt={self.images_per_prompt} does not divide "
                             f"batch_size={self.batch_size}")


@dataclass
class DraftConfig(FinetuneConfig):
    """Reward-gradient fine-tuning (DRaFT-K; AlignProp's randomised truncation as an option)."""

    sampling: SamplingConfig = option(SamplingConfig(eta=0.0), "sampling of training images (deterministic DDIM "
                                      "by default, as DRaFT and AlignProp)")
    steps: int = option(100, "optimiser steps", min=1, mutable_on_resume=True)
    batch_size: int = option(8, "samples per process per micro-batch", min=1)
    gradient_accumulation_steps: int = option(1, "micro-batches whose gradients are averaged before each step",
                                              min=1)
    truncation_steps: int = option(2, "K: the reward's gradient flows through the last K denoising steps "
                                   "(1 is ReFL-like)", min=1)
    randomized_truncation: bool = option(False, "draw K uniformly from 1..truncation_steps at every step "
                                         "(AlignProp)")
    gradient_checkpointing: bool = option(True, "recompute the UNet's activations in the backward pass (less "
                                          "memory, about a third more compute)")
    reg_coef: float = option(0.0, "> 0: MSE between the adapted and the frozen UNet's predictions on the steps "
                             "with a gradient (keeps the model near the base)", min=0)
    lr: float = option(2e-3, "learning rate (AdamW)", min=0, min_exclusive=True)
    grad_clip: float = option(1.0, "gradient norm clip", min=0, min_exclusive=True)

    METHOD = "draft"


CONFIGS: dict[str, type[FinetuneConfig]] = {"bon": BestOfNConfig, "sft": SFTConfig, "rl": RLConfig,
                                            "draft": DraftConfig}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def load_finetune_config(method: str, path: str | os.PathLike | None = None,
                         overrides: Sequence[str] | None = None) -> FinetuneConfig:
    """The checked config of ``method`` from a YAML file and ``--set`` overrides.

    A key of another method's config (e.g. ``samples_per_prompt`` given to RL) is named as such.

    Example:
        >>> load_finetune_config("rl", None, ["samples_per_prompt=4"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: --set samples_per_prompt=4: 'samples_per_prompt' is a key of the sft config, ...
    """
    if method not in CONFIGS:
        raise InputError(f"unknown method {method!r} (bon, sft, rl or draft)")
    cls = CONFIGS[method]
    own = _field_names(cls)
    data = read_yaml(path) if path is not None else {}
    sources = [(str(path), k) for k in data] + [(f"--set {o}", o.partition("=")[0].split(".")[0])
                                                for o in overrides or []]
    for where, key in sources:
        if key not in own:
            for other, other_cls in CONFIGS.items():
                if other != method and key in _field_names(other_cls):
                    raise InputError(f"{where}: '{key}' is a key of the {other} config, not of {method} "
                                     f"(wrong --method?)")
    if data.get("method") not in (None, "", method):
        raise InputError(f"{path}: method: this is a {data['method']} config, but --method is {method}")
    return load_config(cls, path, overrides)


def as_config(method: str, config: FinetuneConfig | dict) -> FinetuneConfig:
    """A checked config of ``method`` from a config object or a plain nested dict."""
    from textnorm_t2i.config import from_dict

    cls = CONFIGS[method]
    if isinstance(config, cls):
        return config
    if isinstance(config, FinetuneConfig):
        raise InputError(f"a {type(config).__name__} was given to {method}; expected {cls.__name__}")
    return from_dict(cls, dict(config), "config")
