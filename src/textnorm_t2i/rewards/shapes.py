"""Embedded proxy reward models: small CLIP-style dual encoders for the synthetic world.

They are trained (``textnorm train reward``) contrastively on rendered scenes with *realistically
noisy captions* (counts omitted or wrong, colours missing, relations mostly absent), never on oracle
verdicts, so, like CLIP on web captions, they are informative but weak at counting and binding.

Two architectures, chosen by ``config["arch"]``:
- ``"cnn-bow"``: a convolutional image encoder with global average pooling and a bag-of-words text
  encoder (cannot bind colours to shapes by construction);
- ``"cnn-transformer"``: a deeper CNN with a small transformer text encoder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.tokenizer import build_tokenizer
from textnorm_t2i.rewards.base import DualEncoderReward, Images, to_tensor
from textnorm_t2i.rewards.folder import read_model_folder, write_model_folder

EXTRA_WORDS = ("some", "several", "many", "shapes", "objects", "scene", "with", "next", "to", "colorful")


def reward_tokenizer():
    """The world tokenizer extended with the vague words noisy captions use.

    Example:
        >>> tok = reward_tokenizer()
        >>> tok.convert_ids_to_tokens(tok("some circles")["input_ids"])
        ['[BOS]', 'some', 'circles', '[EOS]']
    """
    return build_tokenizer(EXTRA_WORDS, max_length=24)


class ImageEncoder(nn.Module):
    def __init__(self, widths: list[int], dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c_in, w, 3, stride=2 if i < 3 else 1, padding=1), nn.GroupNorm(4, w), nn.GELU()]
            c_in = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Global average pooling: like CLIP's pooled embedding, it blurs "how many" and "which is where".
        return self.head(self.body(x).mean(dim=(2, 3)))


class BagOfWordsEncoder(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.embed(ids) * mask[..., None]
        return self.mlp(e.sum(1) / mask.sum(1, keepdim=True).clamp_min(1))


class TransformerTextEncoder(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int = 2, max_len: int = 24):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        block = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, batch_first=True,
                                           dropout=0.0, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(ids) + self.pos[: ids.shape[1]], src_key_padding_mask=mask == 0)
        return self.out((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1))


class ShapesDualEncoder(nn.Module):
    """Image and text towers plus a learned logit scale (CLIP-style).

    Example:
        >>> m = ShapesDualEncoder({"arch": "cnn-bow", "dim": 16, "image_widths": [8, 16]}, vocab_size=60)
        >>> m.encode_images(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 16])
    """

    def __init__(self, config: dict, vocab_size: int):
        super().__init__()
        self.config = dict(config)
        dim = config.get("dim", 64)
        self.image = ImageEncoder(list(config.get("image_widths", [32, 64, 128])), dim)
        if config.get("arch", "cnn-bow") == "cnn-bow":
            self.text = BagOfWordsEncoder(vocab_size, dim)
        elif config["arch"] == "cnn-transformer":
            self.text = TransformerTextEncoder(vocab_size, dim, config.get("text_layers", 2))
        else:
            raise InputError(f"unknown reward architecture {config['arch']!r} (cnn-bow or cnn-transformer)")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x * 2 - 1)

    def encode_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(ids, mask.float())


class ShapesReward(DualEncoderReward):
    """An embedded proxy reward: ``exp(logit_scale) x cosine`` of a :class:`ShapesDualEncoder`.

    Example:
        >>> import textnorm_t2i
        >>> r = textnorm_t2i.load_reward("shapes-clip-a")  # doctest: +SKIP
    """

    def __init__(self, model: ShapesDualEncoder, tokenizer: Any, name: str = "shapes", **kwargs: Any):
        super().__init__(**kwargs)
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = int(model.config.get("image_size", 32))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> ShapesReward:
        config, state = read_model_folder(path)
        tokenizer = reward_tokenizer()
        model = ShapesDualEncoder(config, len(tokenizer))
        model.load_state_dict(state)
        return cls(model, tokenizer, name=config.get("name", Path(path).name), **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        write_model_folder(path, self.model, self.name)

    def embed_images(self, images: Images) -> torch.Tensor:
        return self.model.encode_images(to_tensor(images, self.image_size).to(self.device, self.dtype))

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        return self.model.encode_texts(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().clamp(max=100.0))


def contrastive_loss(model: ShapesDualEncoder, images: torch.Tensor, ids: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of (image, caption) pairs."""
    img = F.normalize(model.encode_images(images), dim=-1)
    txt = F.normalize(model.encode_texts(ids, mask), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100.0) * img @ txt.T
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def build_shapes(path: str, **kw: Any) -> ShapesReward:
    """An embedded proxy reward from its folder (``config.json`` + ``model.safetensors``)."""
    return ShapesReward.from_pretrained(path, **kw)
