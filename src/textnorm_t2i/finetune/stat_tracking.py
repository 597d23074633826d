"""Per-prompt reward normalisation (DDPO's stat tracker): advantages from a running buffer per prompt."""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np


class PromptStatTracker:
    """Advantages ``(r - mean) / std`` with the statistics of the prompt's last ``buffer_size`` rewards
    (or of the batch, until the prompt has ``min_count`` of them).

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
