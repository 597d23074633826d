"""LoRA on the UNet through peft (diffusers' adapter integration), and its trainable state."""

from __future__ import annotations

import os
from typing import Any

import torch

from textnorm.io import atomic_write

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2", "ff.net.0.proj",
                   "ff.net.2")


def add_lora(unet: Any, rank: int = 4, alpha: float | None = None, targets: tuple[str, ...] = DEFAULT_TARGETS,
             seed: int = 0) -> list[torch.nn.Parameter]:
    """Freeze the UNet and add a LoRA adapter; returns the trainable parameters.

    Only target names present in the UNet are used (the embedded UNet has few attention layers, so
    its ResNet convolutions are adapted too). LoRA's B matrices start at zero: the adapted model
    starts exactly equal to the base model.
    """
    from peft import LoraConfig

    names = [name for name, _ in unet.named_modules()]
    chosen = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    unet.requires_grad_(False)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=chosen))
    return [p for p in unet.parameters() if p.requires_grad]


def trainable_state(unet: Any) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors by name, for checkpoints and rank-sync checks."""
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def save_lora(unet: Any, path: str | os.PathLike) -> None:
    """Write the trainable (LoRA) tensors to a safetensors file, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> from safetensors.torch import load_file
        >>> net = torch.nn.Linear(2, 1)
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "lora.safetensors"
        >>> save_lora(net, p)
        >>> sorted(load_file(p))
        ['bias', 'weight']
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in trainable_state(unet).items()}
    with atomic_write(path, "wb") as f:
        f.write(save(tensors))
