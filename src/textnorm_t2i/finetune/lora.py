"""LoRA on the UNet through peft (diffusers' adapter integration), and its trainable state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import atomic_write
from textnorm_t2i.rewards.hub import offline

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


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def lora_state_dict(unet: Any, prefix: str = "unet") -> dict[str, torch.Tensor]:
    """The adapter's tensors under diffusers' pipeline key names (``unet.<module>.lora_A.weight``).

    These are peft's own key names (``get_peft_model_state_dict``: no adapter name) with the component's
    prefix, the layout ``pipe.load_lora_weights`` reads.
    """
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet)
    return {f"{prefix}.{k}" if prefix else k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_lora_folder(unet: Any, folder: str | os.PathLike, prefix: str = "unet") -> Path:
    """Save the UNet's LoRA adapter as ``adapter_config.json`` + ``adapter_model.safetensors``.

    Loadable by diffusers (``pipe.load_lora_weights(folder, weight_name="adapter_model.safetensors")``), by peft
    (``LoraConfig.from_pretrained(folder)`` then ``set_peft_model_state_dict``) and by :func:`load_lora_folder`
    and ``textnorm generate --lora FOLDER``. Each file is written atomically.
    """
    import json

    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = unet.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    # diffusers builds the LoraConfig from this metadata key when present, its entries prefixed by the
    # component (as its own save_lora_weights writes them).
    packed = {f"{prefix}.{k}" if prefix else k: v for k, v in config.items()}
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(packed, sort_keys=True)}
    with atomic_write(folder / ADAPTER_WEIGHTS, "wb") as f:
        f.write(save(lora_state_dict(unet, prefix), metadata=metadata))
    with atomic_write(folder / ADAPTER_CONFIG) as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return folder


def load_lora_folder(unet: Any, folder: str | os.PathLike, prefix: str = "unet") -> None:
    """Add the adapter saved by :func:`save_lora_folder` to ``unet`` (through peft).

    Example:
        >>> load_lora_folder(None, "/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /nonexistent: no such folder ...
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (expected a LoRA folder with {ADAPTER_CONFIG} and "
                         f"{ADAPTER_WEIGHTS})")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder}: not a LoRA folder (missing {', '.join(missing)})")
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        config = LoraConfig.from_pretrained(str(folder))
        state = load_file(folder / ADAPTER_WEIGHTS)
    except Exception as e:  # a corrupt or foreign file: one clear line
        raise InputError(f"{folder}: unreadable LoRA adapter ({type(e).__name__}: {e})") from None
    if prefix:
        state = {k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")}
    if not state:
        raise InputError(f"{folder}: no LoRA weights for the {prefix or 'model'} in {ADAPTER_WEIGHTS}")
    broken = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if broken is not None:
        raise InputError(f"{folder}: the adapter has non-finite weights (e.g. {broken}); it came from a run that "
                         "diverged and would turn every image into NaN")
    unet.add_adapter(config)
    result = set_peft_model_state_dict(unet, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise InputError(f"{folder}: the adapter does not fit this model ({len(unexpected)} unexpected keys, "
                         f"e.g. {unexpected[0]})")


def push_lora_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = True,
                     token_env: str = "HF_TOKEN") -> str:
    """Upload a LoRA folder (:func:`save_lora_folder`) to a hub model repository; returns its URL.

    The token comes from the environment (``token_env``, default ``HF_TOKEN``) and is never printed. No token,
    or ``HF_HUB_OFFLINE`` set, is a one-line error before anything is sent.

    Example:
        >>> push_lora_to_hub("/nonexistent", "me/lora")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: /nonexistent: no such folder ...
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (expected a LoRA folder with {ADAPTER_CONFIG})")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder}: not a LoRA folder (missing {', '.join(missing)})")
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise InputError(f"push to hub: no token (set {token_env}; it is read from the environment only)")
    if offline():
        raise InputError("push to hub: HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          commit_message="LoRA adapter from textnorm", allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    except Exception as e:  # network, permission, bad id: one line, without the token
        raise InputError(f"push to hub {repo_id!r}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    return str(url)
