"""One view of the text-to-image pipelines the optimisers fine-tune.

Works on the embedded :class:`~textnorm_t2i.generate.pipeline.ShapesPipeline` (pixel space) and on Stable
Diffusion-style diffusers pipelines (latent space: ``vae`` + ``unet`` + ``text_encoder`` + ``tokenizer``).
"""

from __future__ import annotations

from typing import Any

import torch


class DiffusionBackend:
    """Prompt encoding, latent shapes and decoding for a diffusers pipeline.

    Example:
        >>> from textnorm_t2i.generate.pipeline import build_pipeline
        >>> backend = DiffusionBackend(build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16}))
        >>> backend.latent_shape(2)
        (2, 3, 32, 32)
    """

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.unet = pipe.unet
        self.is_latent = getattr(pipe, "vae", None) is not None
        for module in (pipe.text_encoder, getattr(pipe, "vae", None)):
            if module is not None:
                module.requires_grad_(False).eval()
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text conditioning for each prompt (cached per distinct prompt: the text encoder is frozen)."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if todo:
            if self.is_latent:
                emb = self.pipe.encode_prompt(todo, self.device, 1, do_classifier_free_guidance=False)[0]
            else:
                emb = self.pipe.encode_prompts(todo)
            self._cache.update({p: e for p, e in zip(todo, emb)})
        return torch.stack([self._cache[p] for p in prompts])

    def latent_shape(self, n: int) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        return (n, self.unet.config.in_channels, size, size)

    def decode(self, latents: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Images in [0, 1], ``N x 3 x H x W``: on the CPU, or (``grad``) on the latents' device with the graph
        kept, for a reward's gradient to reach the latents."""
        with torch.set_grad_enabled(grad):
            if self.is_latent:
                vae = self.pipe.vae
                x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
            else:
                x = latents
            images = (x.float().clamp(-1, 1) + 1) / 2
        return images if grad else images.detach().cpu()
