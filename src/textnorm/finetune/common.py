"""What the three optimisers share: configs, the reward to optimise, evaluation and logging."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict, deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm.errors import InputError
from textnorm.rewards.base import Reward

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "generator": "shapes",            # "shapes" or a pipeline folder
    "out": "runs/finetune",
    "prompts": {"subsets": ["counting", "composition"], "n": 16, "seed": 0, "list": None},
    "reward": {"name": "shapes-clip-a", "path": None, "textnorm": False, "prompt_sets": "rules", "temperature": 1.0,
               "scaling": "none", "ensemble": None, "colors": None},
    "sampling": {"steps": 10, "guidance_scale": 3.0, "eta": 1.0},
    "lora": {"rank": 4, "alpha": 4, "targets": None},
    "eval": {"every": 1, "prompts": None, "n_prompts": 8, "seed": 1234, "steps": 20},
    "log": {"tensorboard": True},
}


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge (override wins).

    Example:
        >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
        {'a': {'b': 1, 'c': 3}}
    """
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_objective(cfg: dict) -> tuple[Reward, Reward, Reward]:
    """(objective reward, its raw base reward, TextNorm of the base) from ``cfg["reward"]``.

    ``name`` may be a list (an ensemble of members, ``ensemble: {mode, lam}``); ``textnorm: true`` wraps
    each member in TextNorm over contrastive sets (``prompt_sets``: ``rules``, ``tia2`` or a JSON file).
    """
    from textnorm.calibrate.ensemble import Ensemble
    from textnorm.calibrate.textnorm import TextNorm
    from textnorm.prompts.files import load_prompt_sets
    from textnorm.prompts.rules import COLORS, rule_set
    from textnorm.rewards.registry import load_reward

    rc = cfg["reward"]
    names = rc["name"] if isinstance(rc["name"], list) else [rc["name"]]
    paths = rc.get("path") or [None] * len(names)
    paths = paths if isinstance(paths, list) else [paths]
    members = [load_reward(n, p) for n, p in zip(names, paths)]
    colors = tuple(rc.get("colors") or _default_colors(cfg) or COLORS)

    def generator(prompt: str) -> list[str]:
        return rule_set(prompt, colors=colors)

    def normed(r: Reward) -> TextNorm:
        if rc.get("prompt_sets", "rules") == "rules":
            return TextNorm(r, {}, rc.get("temperature", 1.0), rc.get("scaling", "none"), generator=generator)
        return TextNorm(r, load_prompt_sets(rc["prompt_sets"]), rc.get("temperature", 1.0), rc.get("scaling", "none"),
                        generator=generator)

    base = members[0] if len(members) == 1 else Ensemble(members, mode="mean")
    base_tn = normed(members[0]) if len(members) == 1 else Ensemble([normed(m) for m in members], mode="mean")
    chosen = [normed(m) for m in members] if rc.get("textnorm") else members
    if len(chosen) == 1:
        objective = chosen[0]
    else:
        ens = rc.get("ensemble") or {}
        objective = Ensemble(chosen, mode=ens.get("mode", "mean"), lam=ens.get("lam", 0.5))
    return objective, base, base_tn


def _default_colors(cfg: dict) -> tuple[str, ...] | None:
    if cfg.get("generator", "shapes") == "shapes":
        from textnorm.world.vocab import COLORS

        return tuple(COLORS)
    return None


def training_prompts(cfg: dict) -> list[str]:
    """The prompt pool: an explicit list, or prompts sampled from world subsets."""
    pc = cfg["prompts"]
    if pc.get("list"):
        return list(pc["list"])
    from textnorm.world.grammar import sample_prompts

    out: list[str] = []
    for subset in pc["subsets"]:
        out += sample_prompts(subset, pc["n"], seed=pc["seed"])
    if not out:
        raise InputError("no training prompts: give prompts.list or prompts.subsets")
    return out


def eval_prompts(cfg: dict) -> list[str]:
    ec = cfg["eval"]
    if ec.get("prompts"):
        return list(ec["prompts"])
    pool = training_prompts(cfg)
    rng = np.random.default_rng(ec["seed"])
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(ec["n_prompts"], len(pool)), replace=False))]


def gold_verdicts(images: Any, prompts: list[str]) -> np.ndarray | None:
    """The oracle's verdict (1.0 aligned, 0.0 not) per image, when every prompt is a world prompt and the
    images are world-sized (else None)."""
    from textnorm.generate.grid import to_uint8
    from textnorm.world.grammar import parse
    from textnorm.world.oracle import judge
    from textnorm.world.vocab import BASE_SIZE

    try:
        specs = [parse(p) for p in prompts]
    except InputError:
        return None
    if images.shape[-1] < BASE_SIZE or images.shape[-1] != images.shape[-2]:
        return None
    return np.array([float(judge(a, s).aligned) for a, s in zip(to_uint8(images), specs)])


def gold_alignment(images: Any, prompts: list[str]) -> float | None:
    """Fraction judged aligned by the oracle (None where :func:`gold_verdicts` is None)."""
    verdicts = gold_verdicts(images, prompts)
    return None if verdicts is None else float(verdicts.mean())


def derived_seed(*parts: int) -> int:
    """A seed derived from integers (run seed, epoch, rank, purpose ...), independent across parts.

    Example:
        >>> derived_seed(0, 1) == derived_seed(0, 1) != derived_seed(1, 0)
        True
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def default_device() -> torch.device:
    """Where fine-tuning runs: the GPU when there is one, else the CPU (as ``accelerate`` picks for RL)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def adapters_off(unet: Any):
    """A context-manager factory that runs the UNet with its LoRA adapters disabled (the base model)."""

    @contextmanager
    def off():
        unet.disable_adapters()
        try:
            yield
        finally:
            unet.enable_adapters()

    return off


class PromptStatTracker:
    """Per-prompt reward normalisation (DDPO): advantages from a running buffer per prompt.

    Example:
        >>> t = PromptStatTracker(buffer_size=4, min_count=2)
        >>> t.update(["a", "a", "b", "b"], np.array([1.0, 3.0, 0.0, 0.0])).round(3).tolist()
        [-1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, buffer_size: int = 32, min_count: int = 8):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.buffers: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.buffer_size))

    def update(self, prompts: list[str], rewards: np.ndarray) -> np.ndarray:
        rewards = np.asarray(rewards, dtype=np.float64)
        out = np.empty_like(rewards)
        for p in dict.fromkeys(prompts):
            idx = [i for i, q in enumerate(prompts) if q == p]
            self.buffers[p].extend(rewards[idx].tolist())
            pool = np.array(self.buffers[p]) if len(self.buffers[p]) >= self.min_count else rewards
            out[idx] = (rewards[idx] - pool.mean()) / (pool.std() + 1e-6)
        return out

    def state(self) -> dict:
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "buffers": {p: list(b) for p, b in self.buffers.items()}}

    def load(self, state: dict) -> None:
        self.buffer_size, self.min_count = state["buffer_size"], state["min_count"]
        self.buffers = defaultdict(lambda: deque(maxlen=self.buffer_size))
        for p, values in state["buffers"].items():
            self.buffers[p].extend(values)


class RunLog:
    """CSV (always) and TensorBoard (when installed) logging of evaluation rows, main process only."""

    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = True, resume: bool = False):
        self.path = out / "eval.csv"
        self.enabled = enabled
        self.fields: list[str] | None = None
        self.writer = None
        if enabled and resume and self.path.exists():
            with self.path.open() as f:
                self.fields = next(csv.reader(f), None)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                self.writer = None

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run redoes them)."""
        if not (self.enabled and self.path.exists()):
            return
        with self.path.open() as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["step"]) <= step]
        if rows:
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and v == v:
                    self.writer.add_scalar(k, v, row["step"])
            self.writer.flush()


class Evaluator:
    """Fixed prompts and seeds sampled deterministically (eta = 0) at every evaluation.

    Logs the optimised reward, the raw base reward, its TextNorm version, gold alignment (oracle, for
    world prompts) and drift from the base model (mean squared pixel change on the same noise).
    """

    def __init__(self, cfg: dict, backend: Any, objective: Reward, raw: Reward, textnorm: Reward, out: Path):
        from textnorm.finetune.ddim import DDIMPolicy

        self.cfg, self.backend, self.out = cfg, backend, out
        self.objective, self.raw, self.textnorm = objective, raw, textnorm
        self.prompts = eval_prompts(cfg)
        self.policy = DDIMPolicy(backend.pipe.scheduler.config, cfg["eval"]["steps"], eta=0.0)
        self.base_images: torch.Tensor | None = None

    def sample(self) -> torch.Tensor:
        from textnorm.finetune.ddim import sample_trajectories

        g = torch.Generator().manual_seed(self.cfg["eval"]["seed"])
        return sample_trajectories(self.backend, self.prompts, self.policy, self.cfg["sampling"]["guidance_scale"],
                                   g).images

    def __call__(self, step: int, extra: dict | None = None) -> dict:
        from textnorm.generate.grid import image_grid, to_pil

        images = self.sample()
        if self.base_images is None:
            self.base_images = images
        row = {"step": step,
               "objective": float(self.objective.score(images, self.prompts).mean()),
               "raw_reward": float(self.raw.score(images, self.prompts).mean()),
               "textnorm_reward": float(self.textnorm.score(images, self.prompts).mean())}
        gold = gold_alignment(images, self.prompts)
        row["gold_alignment"] = float("nan") if gold is None else gold
        row["drift"] = float(((images - self.base_images) ** 2).mean())
        row.update(extra or {})
        grids = self.out / "grids"
        grids.mkdir(parents=True, exist_ok=True)
        image_grid(to_pil(images), rows=len(images), scale=3, labels=self.prompts).save(grids / f"step_{step:05d}.png")
        return row


def warm_caches(backend: Any, rewards: list[Reward], prompts: list[str]) -> None:
    """Fill the text-embedding caches for every prompt up front, in one fixed order.

    Batched text encoding can differ in the last bits with the batch's make-up; encoding all prompts
    once, the same way in a fresh and in a resumed run, keeps resumed runs bitwise identical.
    """
    prompts = list(dict.fromkeys(["", *prompts]))
    backend.encode(prompts)
    dummy = torch.zeros(len(prompts) - 1, 3, 32, 32)
    for reward in rewards:
        reward.score(dummy, prompts[1:])


def params_digest(params: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the trainable tensors (to compare ranks and runs bit for bit)."""
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(params[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def print_accounting(method: str, cfg: dict, world_size: int, per_rank: int, extra: str = "") -> None:
    print(f"[{method}] processes: {world_size}; samples per process per epoch: {per_rank}; "
          f"samples per epoch: {per_rank * world_size}{extra}", flush=True)
