"""The typed config of ``textnorm train reward`` (torch-free, so a bad config fails at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textnorm_t2i.config import MAX_SEED, Config, load_config, option, read_yaml
from textnorm_t2i.errors import InputError


def check_name(name: str) -> None:
    """A reward needs a name (it is written into its config.json and shown wherever it is scored)."""
    if not name.strip():
        raise InputError("name: give the reward a name")


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

    method: Literal["contrastive"] = option("contrastive", "this config trains a contrastive proxy "
                                            "(method: preference trains shapes-pref)")
    name: str = option("shapes-clip-a", "the reward's name (written into its config.json)")
    seed: int = option(0, "seed of the initialisation and the batches", min=0, max=MAX_SEED)
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
        check_name(self.name)


@dataclass
class PrefTrainConfig(Config):
    """Fine-tuning a CLIP-like proxy on simulated pairwise preferences, the way ImageReward and PickScore
    were made: generator samples of one prompt, compared by simulated raters (the oracle's verdict, flipped
    with ``flip``, plus a mild preference for the better-looking image when both verdicts agree)."""

    method: Literal["preference"] = option("preference", "this config trains a preference proxy")
    name: str = option("shapes-pref", "the reward's name (written into its config.json)")
    base: str = option("shapes-clip-a", "the registered embedded reward to start from (and regularise towards)")
    seed: int = option(0, "seed of prompts, samples, raters, split and batches", min=0, max=MAX_SEED)
    prompts_per_subset: int = option(100, "training prompts per world subset (disjoint from TIA2-Shapes)", min=1)
    samples_per_prompt: int = option(6, "generator samples per prompt (all pairs are compared)", min=2, max=16)
    sampling_steps: int = option(10, "DDIM steps of the generator", min=1, max=200)
    max_comparisons: int = option(20_000, "upper bound on comparisons", min=10)
    flip: float = option(0.1, "rater noise: share of comparisons reported the wrong way round", min=0.1, max=0.5)
    look_preference: float = option(0.1, "when both verdicts agree, extra probability of preferring the image "
                                    "with more coloured pixels (0 = a coin flip)", min=0, max=0.5)
    holdout: float = option(0.15, "share of prompts whose comparisons are held out for early stopping", min=0.05,
                            max=0.5)
    steps: int = option(800, "optimisation steps at most", min=1)
    batch_size: int = option(64, "comparisons per step", min=1)
    lr: float = option(3e-4, "learning rate (AdamW)", min=0, min_exclusive=True)
    reg_coef: float = option(1.0, "L2 pull of the weights towards the base model's", min=0)
    eval_every: int = option(25, "held-out evaluation every this many steps", min=1)
    patience: int = option(8, "stop after this many evaluations without a better held-out loss", min=1)


@dataclass
class DetectModelConfig(Config):
    """The architecture of ``shapes-detect``'s parse network."""

    widths: list[int] = option([32, 64, 128], "CNN channels per stage (each stage halves the resolution)")
    hidden: int = option(256, "width of the layer the heads read", min=4)

    def check(self) -> None:
        if not self.widths or any(w < 4 or w % 4 for w in self.widths):
            raise InputError("model.widths: give channel counts that are multiples of 4 (group norm of 4 groups)")


@dataclass
class DetectTrainConfig(Config):
    """Training ``shapes-detect``: a network that predicts the oracle's parse of an image, from renders and from
    the embedded generator's own images, every one labelled by the oracle."""

    method: Literal["detect"] = option("detect", "this config trains a parse-predicting reward")
    name: str = option("shapes-detect", "the reward's name (written into its config.json)")
    seed: int = option(0, "seed of scenes, prompts, samples, split and batches", min=0, max=MAX_SEED)
    renders: int = option(24_000, "rendered scenes (a third of them blurred, jittered and noised)", min=0)
    prompts_per_subset: int = option(600, "generator prompts per world subset (disjoint from TIA2-Shapes)", min=0)
    samples_per_prompt: int = option(3, "generator samples per prompt", min=1, max=16)
    sampling_steps: int = option(10, "DDIM steps of the generator", min=1, max=200)
    guidance: float = option(3.0, "classifier-free guidance of the generator samples", min=0)
    generator_share: float = option(0.5, "share of each batch drawn from the generator images (the images the "
                                    "reward is used on; the renders are many more)", min=0, max=1)
    holdout: float = option(0.15, "share of generator prompts whose images are held out (early stopping)",
                            min=0.05, max=0.5)
    steps: int = option(4000, "optimisation steps at most", min=1)
    batch_size: int = option(128, "images per step", min=2)
    lr: float = option(2e-3, "peak learning rate (AdamW, warm-up then cosine)", min=0, min_exclusive=True)
    weight_decay: float = option(0.01, "AdamW weight decay", min=0)
    position_weight: float = option(0.2, "weight of the position loss beside the count loss", min=0)
    eval_every: int = option(250, "held-out evaluation (and a train_log.csv row) every this many steps", min=1)
    model: DetectModelConfig = option(DetectModelConfig(), "architecture")

    def check(self) -> None:
        check_name(self.name)
        if self.renders == 0 and self.prompts_per_subset == 0:
            raise InputError("renders, prompts_per_subset: give the reward some training images")


TRAIN_CONFIGS: dict[str, type[Config]] = {"contrastive": RewardTrainConfig, "preference": PrefTrainConfig,
                                          "detect": DetectTrainConfig}


def load_reward_train_config(path: str, overrides: list[str] | None = None) -> Config:
    """The typed config of a reward-training YAML file: its ``method`` key picks the schema (default contrastive).

    Example:
        >>> load_reward_train_config("configs/reward-pref.yaml").method  # doctest: +SKIP
        'preference'
    """
    method = read_yaml(path).get("method", "contrastive")
    if not isinstance(method, str) or method not in TRAIN_CONFIGS:
        raise InputError(f"{path}: method: expected one of {', '.join(TRAIN_CONFIGS)}, got {method!r}")
    return load_config(TRAIN_CONFIGS[method], path, overrides)
