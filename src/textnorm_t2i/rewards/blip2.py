"""BLIP-2 image-text retrieval reward (transformers ``Blip2ForImageTextRetrieval``)."""

from __future__ import annotations

from typing import Any

import torch

from textnorm_t2i.rewards.base import Images, Reward, to_tensor
from textnorm_t2i.rewards.hub import load_pretrained, processor_stats

BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BLIP2Reward(Reward):
    """BLIP-2 alignment: the image-text-matching probability (``head="itm"``, the default) or the
    image-text contrastive similarity (``head="itc"``, max over query tokens of the cosine).

    Example:
        >>> r = BLIP2Reward.from_pretrained("Salesforce/blip2-itm-vit-g")  # doctest: +SKIP
    """

    name = "blip2"

    def __init__(self, model: Any, tokenizer: Any, head: str = "itm", image_mean: tuple[float, ...] = BLIP_MEAN,
                 image_std: tuple[float, ...] = BLIP_STD, image_size: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if head not in ("itm", "itc"):
            raise ValueError(f"head must be 'itm' or 'itc', got {head!r}")
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.head = head
        self.image_size = image_size or model.config.vision_config.image_size
        self.mean = torch.tensor(image_mean, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, path_or_id: str = "Salesforce/blip2-itm-vit-g", **kwargs: Any) -> BLIP2Reward:
        """Load the retrieval model, its tokenizer and image statistics from a folder or hub id."""
        from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

        try:  # the PIL processor: the default one wants torchvision, which textnorm does not use
            from transformers import BlipImageProcessorPil as BlipImageProcessor
        except ImportError:
            from transformers import BlipImageProcessor

        model = load_pretrained(Blip2ForImageTextRetrieval, path_or_id, "blip2")
        tokenizer = load_pretrained(AutoTokenizer, path_or_id, "blip2")
        stats = processor_stats(BlipImageProcessor, path_or_id)
        return cls(model, tokenizer, **stats, **kwargs)

    differentiable = True  # torch all the way from the pixels

    def preprocess(self, images: Images) -> torch.Tensor:
        x = to_tensor(images, self.image_size).to(self.device, self.dtype)
        return (x - self.mean) / self.std

    def _score_batch(self, images: Images, prompts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        out = self.model(
            pixel_values=self.preprocess(images),
            input_ids=enc["input_ids"].to(self.device),
            attention_mask=enc["attention_mask"].to(self.device),
            use_image_text_matching_head=self.head == "itm",
        )
        logits = out.logits_per_image
        if self.head == "itm":
            return logits.float().softmax(dim=-1)[:, 1]
        return logits.float().diagonal()  # pair i is (image i, text i)


def build_blip2(path_or_id: str, **kw: Any) -> BLIP2Reward:
    """The ``blip2`` reward (ITM probability; ``head="itc"`` for the contrastive similarity)."""
    return BLIP2Reward.from_pretrained(path_or_id, **kw)
