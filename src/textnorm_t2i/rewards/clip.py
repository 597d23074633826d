"""CLIP-family rewards: CLIPScore and PickScore, on transformers ``CLIPModel``."""

from __future__ import annotations

from typing import Any

import torch

from textnorm_t2i.rewards.base import DualEncoderReward, Images, to_tensor
from textnorm_t2i.rewards.hub import load_pretrained, processor_stats

# OpenAI CLIP's pixel statistics, used when a folder has no image-processor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out: Any) -> torch.Tensor:
    # transformers >= 5 returns a ModelOutput whose pooler_output holds the projected features.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPReward(DualEncoderReward):
    """``scale x cosine(image, text)`` with a transformers ``CLIPModel``.

    ``convention="clipscore"`` uses scale 100 (CLIPScore, without its clipping at 0, which would
    create ties); ``convention="pickscore"`` uses the model's learned ``logit_scale.exp()``
    (PickScore). Images are centre-cropped and resized to the model's input size in torch (bicubic,
    antialiased) and normalised with the processor's mean/std, so scoring is differentiable.

    Example:
        >>> r = CLIPReward.from_pretrained("/nonexistent")  # doctest: +SKIP
    """

    name = "clip"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_mean: tuple[float, ...] = CLIP_MEAN,
        image_std: tuple[float, ...] = CLIP_STD,
        image_size: int | None = None,
        convention: str = "clipscore",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if convention not in ("clipscore", "pickscore"):
            raise ValueError(f"convention must be 'clipscore' or 'pickscore', got {convention!r}")
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.convention = convention
        self.name = "clip" if convention == "clipscore" else "pickscore"
        self.image_size = image_size or model.config.vision_config.image_size
        self.mean = torch.tensor(image_mean, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.max_length = model.config.text_config.max_position_embeddings

    @classmethod
    def from_pretrained(cls, path_or_id: str, convention: str = "clipscore", processor: str | None = None,
                        **kwargs: Any) -> CLIPReward:
        """Load model, tokenizer and image statistics from a folder or hub id.

        ``processor`` names a different folder/id for tokenizer and image processor (PickScore
        ships its weights apart from the LAION CLIP-H processor).
        """
        from transformers import AutoTokenizer, CLIPModel

        try:  # the PIL processor: the default one wants torchvision, which textnorm does not use
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:
            from transformers import CLIPImageProcessor

        reward = "pickscore" if convention == "pickscore" else "clip"
        model = load_pretrained(CLIPModel, path_or_id, reward)
        tokenizer = load_pretrained(AutoTokenizer, processor or path_or_id, reward)
        stats = processor_stats(CLIPImageProcessor, processor or path_or_id)
        return cls(model, tokenizer, convention=convention, **stats, **kwargs)

    def preprocess(self, images: Images) -> torch.Tensor:
        """Pixel values as the model expects them: ``N x 3 x S x S``, normalised."""
        x = to_tensor(images, self.image_size).to(self.device, self.dtype)
        return (x - self.mean) / self.std

    def embed_images(self, images: Images) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=self.preprocess(images)))

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:
        return _features(self.model.get_text_features(**self.tokenize(prompts)))

    def logit_scale(self) -> float:
        return 100.0 if self.convention == "clipscore" else float(self.model.logit_scale.exp())


def build_clip(path_or_id: str, **kw: Any) -> CLIPReward:
    """The ``clip`` reward: CLIPScore (100 x cosine)."""
    return CLIPReward.from_pretrained(path_or_id, convention="clipscore", **kw)


def build_pickscore(path_or_id: str, **kw: Any) -> CLIPReward:
    """The ``pickscore`` reward: ``logit_scale.exp()`` x cosine, with the LAION CLIP-H processor by default."""
    if path_or_id == "yuvalkirstain/PickScore_v1":
        kw.setdefault("processor", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    return CLIPReward.from_pretrained(path_or_id, convention="pickscore", **kw)
