"""The embedded text-to-image model: a small diffusers pipeline at 32 x 32 pixels.

Components: ``UNet2DConditionModel`` (pixel space), a DDPM/DDIM scheduler, a small transformers
``CLIPTextModel`` and a word-level tokenizer. ``save_pretrained`` / ``from_pretrained`` round-trip it
(safetensors). Sampling uses classifier-free guidance against the empty prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.grid import to_pil
from textnorm_t2i.generate.tokenizer import MAX_LENGTH, build_tokenizer
from textnorm_t2i.generate.unet_forward import guided_output


class ShapesPipeline(DiffusionPipeline):
    """Text-to-image for the synthetic world.

    Example:
        >>> pipe = ShapesPipeline.from_pretrained("path/to/pipeline")  # doctest: +SKIP
        >>> images = pipe(["two red circles"] * 4, seed=0).images  # doctest: +SKIP
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet: Any, scheduler: Any, text_encoder: Any, tokenizer: Any):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)

    @property
    def sample_size(self) -> int:
        return int(self.unet.config.sample_size)

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text-encoder hidden states, ``N x L x D``, padded to the tokenizer's maximum length."""
        enc = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        out = self.text_encoder(input_ids=enc["input_ids"].to(self.device),
                                attention_mask=enc["attention_mask"].to(self.device))
        return out.last_hidden_state

    def guided_noise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                     guidance_scale: float, unet: Any = None) -> torch.Tensor:
        """The model output with classifier-free guidance (one batched UNet call)."""
        return guided_output(unet or self.unet, x, t, cond, uncond, guidance_scale)

    @torch.inference_mode()
    def __call__(self, prompts: str | Sequence[str], num_inference_steps: int = 25, guidance_scale: float = 3.0,
                 seed: int | None = 0, generator: torch.Generator | None = None, eta: float = 0.0,
                 output_type: str = "pil", batch_size: int = 256, progress: bool = False) -> Any:
        """Sample one image per prompt. ``output_type``: ``"pil"`` or ``"pt"`` (N x 3 x H x W in [0, 1])."""

        if isinstance(prompts, str):
            prompts = [prompts]
        if output_type not in ("pil", "pt"):
            raise InputError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        size = self.sample_size
        outputs = []
        chunks = range(0, len(prompts), batch_size)
        for lo in chunks:
            chunk = list(prompts[lo: lo + batch_size])
            cond = self.encode_prompts(chunk)
            uncond = self.encode_prompts([""] * len(chunk))
            x = torch.randn(len(chunk), 3, size, size, generator=generator).to(self.device)
            for t in self.progress_bar(scheduler.timesteps) if progress else scheduler.timesteps:
                out = self.guided_noise(x, t.to(self.device), cond, uncond, guidance_scale)
                x = scheduler.step(out, t, x, eta=eta, generator=generator).prev_sample
            outputs.append(((x.clamp(-1, 1) + 1) / 2).cpu())
        images = torch.cat(outputs) if outputs else torch.zeros(0, 3, size, size)
        if output_type == "pil":
            images = to_pil(images)
        return _Output(images)


class _Output:
    """Pipeline output with an ``images`` attribute (as diffusers pipelines return)."""

    def __init__(self, images: Any):
        self.images = images


def build_pipeline(config: dict | None = None, seed: int = 0) -> ShapesPipeline:
    """A freshly initialised pipeline from a small config (see ``configs/generator.yaml``).

    Example:
        >>> pipe = build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16})
        >>> pipe(["a red circle"], num_inference_steps=2, output_type="pt").images.shape
        torch.Size([1, 3, 32, 32])
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {"block_out_channels": [16, 32, 64], "layers_per_block": 1, "text_hidden": 64, "text_layers": 2,
           "attention_head_dim": 8, "sample_size": 32, "prediction_type": "v_prediction",
           "beta_schedule": "squaredcos_cap_v2", **(config or {})}
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg["text_hidden"], intermediate_size=2 * cfg["text_hidden"],
        num_hidden_layers=cfg["text_layers"], num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id))
    blocks = list(cfg["block_out_channels"])
    down = ["DownBlock2D"] * (len(blocks) - 1) + ["CrossAttnDownBlock2D"]
    up = ["CrossAttnUpBlock2D"] + ["UpBlock2D"] * (len(blocks) - 1)
    unet = UNet2DConditionModel(
        sample_size=cfg["sample_size"], in_channels=3, out_channels=3, block_out_channels=blocks,
        down_block_types=down, up_block_types=up, layers_per_block=cfg["layers_per_block"],
        cross_attention_dim=cfg["text_hidden"], attention_head_dim=cfg["attention_head_dim"],
        norm_num_groups=min(8, blocks[0]))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=cfg["beta_schedule"],
                              prediction_type=cfg["prediction_type"], clip_sample=False)
    return ShapesPipeline(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
