"""The embedded world as the fine-tuning engine's ground truth: the oracle's verdicts and the world's prompts."""

from __future__ import annotations

from typing import Any

from textnorm_t2i.errors import InputError
from textnorm_t2i.world.grammar import parse, sample_prompts
from textnorm_t2i.world.oracle import fidelity, judge
from textnorm_t2i.world.pixels import to_uint8
from textnorm_t2i.world.vocab import BASE_SIZE


class WorldTruth:
    """The oracle judges world prompts on world-sized images; prompts come from the world's subsets.

    Example:
        >>> import torch
        >>> truth = WorldTruth()
        >>> truth.judge(torch.zeros(1, 3, 32, 32), ["a red circle"])[0]["aligned"]
        False
        >>> truth.judge(torch.zeros(1, 3, 32, 32), ["a photo of a cat"]) is None  # not a world prompt
        True
    """

    def judge(self, images: Any, prompts: list[str]) -> list[dict] | None:
        """``{"aligned", "reasons", "fidelity"}`` per image, when every prompt is a world prompt and the images are
        world-sized (else None); fidelity: every object recognisable, and at least one."""
        try:
            specs = [parse(p) for p in prompts]
        except InputError:
            return None
        if images.shape[-1] < BASE_SIZE or images.shape[-1] != images.shape[-2]:
            return None
        verdicts = [judge(a, spec) for a, spec in zip(to_uint8(images), specs)]
        return [{"aligned": bool(v.aligned), "reasons": list(v.reasons), "fidelity": fidelity(v.objects)}
                for v in verdicts]

    def sample_prompts(self, subset: str, n: int, seed: int) -> list[str]:
        return sample_prompts(subset, n, seed=seed)
