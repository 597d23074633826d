"""Small pieces every fine-tuning method uses: prompts, named random streams, the adapter switch,
cache warm-up, digests and the batch-size accounting line."""

from __future__ import annotations

import enum
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.lora import save_lora_folder, trainable_state
from textnorm_t2i.finetune.truth import GroundTruth, subset_prompts
from textnorm_t2i.io import write_json_atomic
from textnorm_t2i.rewards.base import Reward
from textnorm_t2i.rundir import RunFolder, hold_point


def training_prompts(cfg: Any, truth: GroundTruth | None = None) -> list[str]:
    """The prompt pool: an explicit list, or prompts of named subsets drawn from the ground truth."""
    pc = cfg.prompts
    if pc.list:
        return list(pc.list)
    out: list[str] = []
    for subset in pc.subsets:
        out += subset_prompts(truth, subset, pc.n, pc.seed)
    if not out:
        raise InputError("no training prompts: give prompts.list or prompts.subsets")
    return out


def eval_prompts(cfg: Any, truth: GroundTruth | None = None) -> list[str]:
    """The evaluation prompts: explicit, ``eval.n_prompts`` drawn from the training pool, or (``eval.held_out``)
    ``eval.n_prompts`` per subset of ``prompts.subsets`` that are not training prompts."""
    if cfg.eval.prompts:
        return list(cfg.eval.prompts)
    pool = training_prompts(cfg, truth)
    if cfg.eval.held_out:
        taken, out = set(pool), []
        for subset in cfg.prompts.subsets:
            fresh = [q for q in subset_prompts(truth, subset, cfg.eval.n_prompts + len(pool), cfg.eval.seed,
                                               "eval.held_out")
                     if q not in taken]
            out += fresh[: cfg.eval.n_prompts]
        if not out:
            raise InputError("eval.held_out: no prompts left outside the training prompts (use fewer prompts.n)")
        return out
    rng = np.random.default_rng(cfg.eval.seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(cfg.eval.n_prompts, len(pool)), replace=False))]


def derived_seed(*parts: int) -> int:
    """A seed derived from integers (run seed, epoch, rank, purpose ...), independent across parts.

    Example:
        >>> derived_seed(0, 1) == derived_seed(0, 1) != derived_seed(1, 0)
        True
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class Purpose(enum.IntEnum):
    """What a random stream is for (the number is part of its seed, so streams never share draws)."""

    RL_SAMPLING = 1
    RL_MINIBATCH_ORDER = 2
    SFT_POOL = 7
    SFT_STEP = 8
    BON_POOL = 9
    SFT_SELECT = 10


@dataclass(frozen=True)
class RandomStreams:
    """The run's named random streams, each a pure function of (seed, purpose, counters), so a resumed
    run draws exactly what an uninterrupted one would. Draws are made on the CPU and then moved, so a
    seed means the same on any device.

    Example:
        >>> s = RandomStreams(0)
        >>> torch.equal(torch.rand(2, generator=s.rl_sampling(3, 0)), torch.rand(2, generator=s.rl_sampling(3, 0)))
        True
    """

    seed: int

    def _torch(self, *parts: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(*parts))

    def epoch_prompts(self, epoch: int) -> np.random.Generator:
        """Which training prompts an RL epoch samples (the same on every process)."""
        return np.random.default_rng(derived_seed(self.seed, epoch))

    def rl_sampling(self, epoch: int, rank: int) -> torch.Generator:
        return self._torch(self.seed, epoch, rank, Purpose.RL_SAMPLING)

    def rl_minibatch_order(self, epoch: int, rank: int, inner: int) -> torch.Generator:
        return self._torch(self.seed, epoch, rank, Purpose.RL_MINIBATCH_ORDER, inner)

    def sft_pool(self, chunk_start: int) -> torch.Generator:
        return self._torch(self.seed, Purpose.SFT_POOL, chunk_start)

    def sft_step(self, step: int) -> torch.Generator:
        return self._torch(self.seed, Purpose.SFT_STEP, step)

    def sft_select(self) -> np.random.Generator:
        """Which samples a random selection (SFT's drift control) keeps."""
        return np.random.default_rng(derived_seed(self.seed, Purpose.SFT_SELECT))

    def bon_prompt(self, index: int) -> torch.Generator:
        return self._torch(self.seed, Purpose.BON_POOL, index)


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


def any_process(accelerator: Any, flag: bool) -> bool:
    """True when any process was asked to stop (all processes must stop at the same step or epoch)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "max").item())


def open_accelerated_run(cfg: Any, resume: bool, overwrite: bool, resume_from: Any) -> tuple[Any, Any]:
    """The accelerator (CPU without a GPU, the config's mixed precision) and the opened run folder of an RL or
    DRaFT run. Runs in one Python process (trainer API, the study) may differ in mixed precision, so the
    accelerator state is reset; the process group (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    run = RunFolder(cfg.out, cfg, resume=resume, overwrite=overwrite, resume_from=resume_from,
                    keep=cfg.checkpoints_total_limit, main=accelerator.is_main_process).open()
    return accelerator, run


def checkpoint_or_stop(run: Any, accelerator: Any, stop: Any, unet: Any, optimizer: Any, *, done: int, total: int,
                       every: int, unit: str, state: dict, last: Path | None) -> Path | None:
    """The end of an RL epoch or a DRaFT step: a test's hold point, a stop request agreed by every process, a
    checkpoint when one is due (or the run stops), and :class:`~textnorm_t2i.rundir.RunInterrupted` when it
    stops early. Returns the newest checkpoint."""
    hold_point(f"{unit}:{done}")
    stopping = any_process(accelerator, stop.requested)
    if done % every == 0 or done == total or stopping:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            last = run.checkpoint(f"checkpoint-{done}", {"lora": trainable_state(unet)}, optimizer, state=state)
        accelerator.wait_for_everyone()
    if stopping and done < total:
        raise run.interrupted(stop, f"after {unit.split(':')[-1]} {done} of {total}", last)
    return last


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


def print_accounting(method: str, world_size: int, per_rank: int, extra: str = "") -> None:
    """One line of batch-size accounting at the start of a run (ddpo-pytorch style)."""
    print(f"[{method}] processes: {world_size}; samples per process per epoch: {per_rank}; "
          f"samples per epoch: {per_rank * world_size}{extra}", flush=True)


def finish_ranks(out: Path, unet: Any, rank: int, main: bool, samples_seen: int, accelerator: Any) -> None:
    """Write each rank's weight digest (``ranks/rank{r}.json``: the processes must end with the same adapter) and,
    on the main process, the final LoRA weights."""
    accelerator.wait_for_everyone()
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ranks" / f"rank{rank}.json",
                      {"digest": params_digest(trainable_state(unet)), "samples_seen": samples_seen})
    if main:
        save_lora_folder(unet, out / "lora")
    accelerator.wait_for_everyone()
