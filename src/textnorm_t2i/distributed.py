"""Which process this is under ``accelerate launch`` (rank, world size), without starting anything otherwise."""

from __future__ import annotations

import os

import torch


def process_rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` unless started by ``accelerate launch``).

    Example:
        >>> process_rank_world()
        (0, 1)
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo processes on a machine without GPUs
    return state.process_index, state.num_processes


def is_main_process() -> bool:
    """True in a single process and on rank 0 under ``accelerate launch`` (the one that writes outputs)."""
    return process_rank_world()[0] == 0
