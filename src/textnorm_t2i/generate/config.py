"""The typed config of ``textnorm train generator`` (torch-free, so a bad config fails at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textnorm_t2i.config import MAX_SEED, Config, option
from textnorm_t2i.errors import InputError


@dataclass
class GeneratorModelConfig(Config):
    """The architecture of the embedded generator (see :func:`textnorm_t2i.generate.pipeline.build_pipeline`)."""

    block_out_channels: list[int] = option([16, 32, 64], "UNet channels per resolution (cross-attention at the last)")
    layers_per_block: int = option(1, "ResNet layers per UNet block", min=1)
    text_hidden: int = option(64, "text encoder width (and cross-attention dim)", min=4)
    text_layers: int = option(2, "text encoder layers", min=1)
    attention_head_dim: int = option(8, "channels per attention head", min=1)
    sample_size: int = option(32, "image size in pixels", min=32, max=256)
    prediction_type: Literal["epsilon", "v_prediction"] = option("v_prediction", "what the UNet predicts")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = option("squaredcos_cap_v2",
                                                                                  "noise schedule")

    def check(self) -> None:
        if not self.block_out_channels or any(c < 1 for c in self.block_out_channels):
            raise InputError("model.block_out_channels: give positive channel counts")
        if self.text_hidden % 4:
            raise InputError(f"model.text_hidden: must be a multiple of 4 (4 attention heads), got {self.text_hidden}")


@dataclass
class GeneratorTrainConfig(Config):
    """Training the embedded text-to-image model from scratch on rendered scenes."""

    seed: int = option(0, "seed of the initialisation, the batches and the noise", min=0, max=MAX_SEED)
    steps: int = option(4000, "optimisation steps", min=1, mutable_on_resume=True)
    batch_size: int = option(64, "scenes per step", min=1)
    lr: float = option(1e-3, "learning rate (AdamW)", min=0, min_exclusive=True)
    warmup_steps: int = option(100, "linear learning-rate warm-up steps", min=0)
    grad_clip: float = option(1.0, "gradient norm clip", min=0, min_exclusive=True)
    ema_decay: float = option(0.999, "EMA decay of the shipped weights", min=0, max=1)
    caption_dropout: float = option(0.1, "share of empty captions (for classifier-free guidance)", min=0, max=1)
    subset_weights: dict[Literal["counting", "composition", "comprehensive"], float] = option(
        {"counting": 0.35, "composition": 0.4, "comprehensive": 0.25}, "how often each prompt subset is drawn", min=0)
    checkpoint_every: int = option(500, "checkpoint (with a sample grid) every this many steps", min=1,
                                   mutable_on_resume=True)
    log_every: int = option(25, "write a train_log.csv row every this many steps", min=1, mutable_on_resume=True)
    sample_prompts: list[str] = option(
        ["a red circle", "two blue squares", "three yellow triangles", "four circles",
         "a green square and a red triangle", "two circles and a blue square",
         "a red circle to the left of a blue square", "a yellow triangle above a green circle"],
        "prompts of the sample grid written with each checkpoint", mutable_on_resume=True)
    model: GeneratorModelConfig = option(GeneratorModelConfig(), "architecture")

    def check(self) -> None:
        if not self.subset_weights or sum(self.subset_weights.values()) <= 0:
            raise InputError("subset_weights: give at least one subset with a positive weight")
        if not self.sample_prompts:
            raise InputError("sample_prompts: give at least one prompt")
        from textnorm_t2i.world.grammar import parse

        for p in self.sample_prompts:
            try:
                parse(p)
            except InputError as e:
                raise InputError(f"sample_prompts: {e}") from None
