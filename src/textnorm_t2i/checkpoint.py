"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

Saves module weights, optimizer and LR-scheduler state, RNG states and counters, so that a resumed
run continues exactly where it stopped. Each checkpoint folder is written under a temporary name
and renamed into place, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from textnorm_t2i.errors import InputError


def optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and JSON-able metadata.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.AdamW([p]); p.grad = torch.ones(2); opt.step()
        >>> tensors, meta = optimizer_to_flat(opt.state_dict())
        >>> sorted(tensors)
        ['state.0.exp_avg', 'state.0.exp_avg_sq', 'state.0.step']
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            key = f"state.{idx}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().clone().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in {**tensors, **meta["scalars"]}.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Current states of Python's, numpy's and torch's global RNGs."""
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    meta = {"python": repr(random.getstate()), "numpy": [np_state[0], int(np_state[2]), int(np_state[3]),
                                                        float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    import ast

    torch.set_rng_state(tensors["rng.torch"])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(ast.literal_eval(meta["python"]))


def save_checkpoint(folder: str | os.PathLike, modules: dict[str, torch.nn.Module | dict],
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    state: dict | None = None) -> Path:
    """Write ``folder`` atomically: ``weights.safetensors``, ``optimizer.safetensors``, ``state.json``.

    ``modules`` maps a name to a module (its ``state_dict`` is saved) or to a plain tensor dict.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_checkpoint(tmp, modules, optimizer, scheduler, state)
    except BaseException:  # a full disk or Ctrl-C: no half-written checkpoint is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _write_checkpoint(tmp: Path, modules: dict, optimizer: torch.optim.Optimizer | None, scheduler: Any,
                      state: dict | None) -> None:
    weights = {}
    for name, module in modules.items():
        sd = module.state_dict() if isinstance(module, torch.nn.Module) else module
        weights.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in sd.items()})
    save_file(weights, tmp / "weights.safetensors")
    meta: dict[str, Any] = {"state": state or {}}
    extra: dict[str, torch.Tensor] = {}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = optimizer_to_flat(optimizer.state_dict())
        extra.update({f"optimizer.{k}": v for k, v in opt_tensors.items()})
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    rng_tensors, meta["rng"] = rng_state()
    extra.update(rng_tensors)
    save_file(extra, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=str))


class Checkpoint:
    """A checkpoint read fully into memory (and so known to be intact), ready to restore live objects."""

    def __init__(self, folder: Path, weights: dict[str, torch.Tensor], extra: dict[str, torch.Tensor], meta: dict):
        self.folder, self.weights, self.extra, self.meta = folder, weights, extra, meta

    @property
    def state(self) -> dict:
        """The ``state`` dict given to :func:`save_checkpoint` (counters, the run's config ...)."""
        return self.meta.get("state", {})

    def restore(self, modules: dict[str, torch.nn.Module | dict], optimizer: torch.optim.Optimizer | None = None,
                scheduler: Any = None, restore_rng: bool = True) -> dict:
        """Load the checkpoint into live objects; returns its ``state`` dict."""
        try:
            for name, module in modules.items():
                prefix = f"{name}."
                sd = {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)}
                if isinstance(module, torch.nn.Module):
                    module.load_state_dict(sd)
                else:
                    if set(sd) != set(module):
                        raise KeyError(f"{name}: tensor names differ")
                    with torch.no_grad():
                        for k, v in sd.items():
                            module[k].copy_(v)
            if optimizer is not None:
                opt = {k[len("optimizer."):]: v for k, v in self.extra.items() if k.startswith("optimizer.")}
                optimizer.load_state_dict(optimizer_from_flat(opt, self.meta["optimizer"]))
            if scheduler is not None and "scheduler" in self.meta:
                scheduler.load_state_dict(self.meta["scheduler"])
            if restore_rng:
                set_rng_state(self.extra, self.meta["rng"])
        except (KeyError, RuntimeError, ValueError) as e:
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise InputError(f"{self.folder}: checkpoint does not fit this run ({reason})") from None
        return self.state


def read_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder completely; a missing, truncated or corrupt file is a one-line :class:`InputError`."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        raise InputError(f"{folder}: not a checkpoint (no state.json)")
    try:
        meta = json.loads((folder / "state.json").read_text())
        weights = load_file(folder / "weights.safetensors")
        extra = load_file(folder / "optimizer.safetensors")
        if not isinstance(meta, dict) or "rng" not in meta:
            raise ValueError("state.json lacks the RNG state")
        import ast

        ast.literal_eval(meta["rng"]["python"])  # parsed now, so a damaged state is found before restoring
        name, pos, has_gauss, cached = meta["rng"]["numpy"]
    except (OSError, ValueError, json.JSONDecodeError, Exception) as e:  # safetensors raises its own errors
        raise InputError(f"{folder}: unreadable checkpoint ({type(e).__name__})") from None
    return Checkpoint(folder, weights, extra, meta)


def load_checkpoint(folder: str | os.PathLike, modules: dict[str, torch.nn.Module | dict],
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    restore_rng: bool = True) -> dict:
    """Load what :func:`save_checkpoint` wrote into live objects; returns the saved ``state`` dict."""
    return read_checkpoint(folder).restore(modules, optimizer, scheduler, restore_rng)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``run_dir``, newest (highest step) first."""
    found = []
    for p in Path(run_dir).glob("checkpoint-*"):
        suffix = p.name.split("-", 1)[1]
        if suffix.isdigit() and p.is_dir():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


def prune_checkpoints(run_dir: str | os.PathLike, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (None keeps all); returns the deleted folders."""
    if keep is None:
        return []
    old = list_checkpoints(run_dir)[keep:]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old
