"""The study's objectives: each reward raw and with TextNorm, and ensembles -- with honest temperatures.

TextNorm's temperature of each reward (and the UR ensemble's lambda) is chosen by k-fold
cross-validation over the prompts of a labelled benchmark (TIA2-Shapes), with the same contrastive sets
the study optimises with (the rules), never on the study's own prompts. Objective names:

- ``raw/<reward>``, ``tn/<reward>``: one reward, raw or TextNorm-normalised;
- ``ens-mean-tn``, ``ens-ur-tn``: mean, and mean - lambda x std, of the members' TextNorm rewards;
- ``ens-mean-raw``: mean of the members' raw rewards (the control separating "ensemble" from "TextNorm");
- ``control/prompt-free``: a raw reward averaged over a fixed list of prompts, whatever the image's prompt
  (:class:`PromptFreeReward`; DRaFT's drift control).

Scoring a batch once per member (:class:`ObjectiveScorer`) gives every objective at once: raw and
TextNorm rewards come from the same set rewards, ensembles from the member scores.

Example:
    >>> family("tn/shapes-clip-a"), family("ens-mean-raw"), family("ens-ur-tn"), family("control/random")
    ('textnorm', 'raw', 'textnorm', 'control')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from textnorm_t2i.bench.evaluate import evaluate_subset, summarize
from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.calibrate.ensemble import Ensemble, combine
from textnorm_t2i.calibrate.select import DEFAULT_LAMS, DEFAULT_TEMPERATURES, cross_validate, kfold_assignment
from textnorm_t2i.calibrate.textnorm import normalize_sets, pad_sets
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import open_image
from textnorm_t2i.objectives.factory import load_members, normalise, normalise_by_rules
from textnorm_t2i.rewards.base import Images, Reward
from textnorm_t2i.rewards.spec import RewardSpec

METRIC = "auroc"


def family(objective: str) -> str:
    """``"textnorm"`` for TextNorm-based objectives, ``"control"`` for the methods' controls, ``"raw"`` otherwise."""
    if objective.startswith("control/"):
        return "control"
    return "textnorm" if objective.startswith("tn/") or objective.endswith("-tn") else "raw"


def label(objective: str) -> str:
    """A reader's name for an objective.

    Example:
        >>> label("tn/shapes-clip-a"), label("ens-ur-tn")
        ('textnorm(shapes-clip-a)', 'UR ensemble of textnorm')
    """
    if objective.startswith("raw/"):
        return objective[4:]
    if objective.startswith("tn/"):
        return f"textnorm({objective[3:]})"
    return {"ens-mean-raw": "mean ensemble of raw", "ens-mean-tn": "mean ensemble of textnorm",
            "ens-ur-tn": "UR ensemble of textnorm", "control/aligned": "control: the oracle's aligned samples",
            "control/random": "control: a random share",
            "control/prompt-free": "control: a prompt-free reward"}[objective]


def _cv(values: np.ndarray, k: int, seed: int = 0) -> tuple[int, np.ndarray]:
    """``(global choice, held-out per-prompt values)`` of a grid ``(n_grid, n_prompts)`` by k-fold CV."""
    folds = kfold_assignment(values.shape[1], k, seed)
    pick = cross_validate(values, folds)[folds]
    return int(np.argmax(values.mean(axis=1))), values[pick, np.arange(values.shape[1])]


def choose_temperatures(rewards: Sequence[str], ensemble: Sequence[str], benchmark: str = "shapes", k: int = 5,
                        temperatures: Sequence[float] | None = None, lams: Sequence[float] | None = None,
                        n_bootstrap: int = 1000, progress: bool = True, custom: dict[str, Any] | None = None
                        ) -> dict:
    """Per reward, the TextNorm temperature chosen by k-fold CV over the prompts of all of ``benchmark``'s
    subsets (AUROC against its annotators), with the held-out AUROC of raw and TextNorm; then the UR
    ensemble's lambda over ``ensemble``'s members at their chosen temperatures.

    ``custom`` maps names to reward objects scored instead of the registered reward of that name.
    Returns ``{"rewards": {name: {temperature, raw, textnorm}}, "ur_lam": float, "ensembles": {...}}``.
    """
    from tqdm.auto import tqdm

    grid = list(temperatures or DEFAULT_TEMPERATURES)
    lam_grid = list(lams or DEFAULT_LAMS)
    subsets = load_benchmark(benchmark)
    images = {name: [open_image(s.image_path(i)) for i in s.images] for name, s in subsets.items()}

    def per_prompt(scores: dict[str, np.ndarray]) -> np.ndarray:
        """Per-prompt AUROC, every subset's prompts in one row."""
        return np.concatenate([evaluate_subset(s, scores[n], allow_missing=True).values[METRIC]
                               for n, s in subsets.items()])

    padded: dict[str, dict[str, tuple]] = {}
    out: dict[str, Any] = {"benchmark": benchmark, "k": k, "metric": METRIC, "grid": grid, "rewards": {}}
    for name in tqdm(rewards, desc="temperatures (CV)", disable=not progress):
        spec = RewardSpec(name="shapes-clip-a" if name in (custom or {}) else name, textnorm=True)
        model = (custom or {}).get(name) or load_members(spec)[0]
        tn = normalise(model, spec)
        padded[name] = {n: pad_sets(tn.set_rewards(images[n], s.captions)) for n, s in subsets.items()}
        raw = per_prompt({n: v[:, 0].double().numpy() for n, (v, _m) in padded[name].items()})
        values = np.stack([per_prompt({n: normalize_sets(v, m, t).double().numpy()
                                       for n, (v, m) in padded[name].items()}) for t in grid])
        chosen, heldout = _cv(values, k)
        out["rewards"][name] = {
            "temperature": grid[chosen],
            "raw": summarize({METRIC: raw}, n_bootstrap),
            "textnorm": summarize({METRIC: heldout}, n_bootstrap),
            "n_prompts": int(values.shape[1])}
    if len(ensemble) > 1:
        temps = [out["rewards"][m]["temperature"] for m in ensemble]

        def members(n: str) -> torch.Tensor:
            return torch.stack([normalize_sets(*padded[m][n], t) for m, t in zip(ensemble, temps)])

        values = np.stack([per_prompt({n: combine(members(n), "ur", lam).double().numpy() for n in subsets})
                           for lam in lam_grid])
        chosen, heldout = _cv(values, k)
        out["ur_lam"] = lam_grid[chosen]
        out["ensembles"] = {
            "ens-mean-tn": summarize({METRIC: per_prompt({n: members(n).mean(0).double().numpy()
                                                          for n in subsets})}, n_bootstrap),
            "ens-ur-tn": summarize({METRIC: heldout}, n_bootstrap),
            "ens-mean-raw": summarize({METRIC: per_prompt({n: torch.stack([padded[m][n][0][:, 0] for m in ensemble])
                                                           .mean(0).double().numpy() for n in subsets})},
                                      n_bootstrap)}
    return out


class PromptFreeReward(Reward):
    """``reward`` averaged over a fixed list of ``prompts``, whatever prompt an image is scored with: the same
    model, scale and gradient path as ``reward`` with no information about the prompt (DRaFT's drift control).

    Example:
        >>> class Length(Reward):
        ...     def _score_batch(self, images, prompts):
        ...         return torch.tensor([float(len(p)) for p in prompts])
        >>> PromptFreeReward(Length(), ["a", "abc"]).score(torch.zeros(2, 3, 4, 4), ["x", "yyyyy"]).tolist()
        [2.0, 2.0]
    """

    def __init__(self, reward: Reward, prompts: Sequence[str]):
        super().__init__(device=reward.device, dtype=reward.dtype, batch_size=reward.batch_size)
        if not prompts:
            raise InputError("a prompt-free reward needs at least one prompt to average over")
        self.reward, self.prompts = reward, list(prompts)
        self.name = f"prompt-free {reward.name}"
        self.differentiable = reward.differentiable

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        # One set per image: dual encoders embed each image once and every prompt once (cached).
        sets = self.reward.score_sets(images, [self.prompts] * len(prompts), grad=grad)
        return torch.stack([s.float().mean() for s in sets])


class ObjectiveScorer:
    """Scores images by every objective at once (one pass of set rewards per member reward).

    Args:
        temperatures: ``{reward: temperature}`` (from :func:`choose_temperatures`).
        ensemble: the ensembles' members; ``ur_lam`` the UR ensemble's lambda.
        prompt_free: when given, ``control/prompt-free`` is scored too: ``prompt_free[0]``'s raw reward averaged
            over the prompts ``prompt_free[1]`` (:class:`PromptFreeReward`).
        extra: more ``{name: Reward}`` scored raw and TextNorm under their own names (e.g. the map's
            perceive variants, with ``extra_temperatures``).
    """

    def __init__(self, temperatures: dict[str, float], ensemble: Sequence[str] = (), ur_lam: float = 0.5,
                 prompt_free: tuple[str, Sequence[str]] | None = None):
        self.temperatures = dict(temperatures)
        self.ensemble, self.ur_lam = list(ensemble), float(ur_lam)
        self.normed = {}
        for name, t in self.temperatures.items():
            spec = RewardSpec(name=name, textnorm=True, temperature=t)
            self.normed[name] = normalise(load_members(spec)[0], spec)
        self.prompt_free = (PromptFreeReward(self.normed[prompt_free[0]].reward, prompt_free[1])
                            if prompt_free else None)

    def add(self, name: str, reward: Any, temperature: float) -> None:
        """Score another reward (raw and TextNorm, rules sets) under ``name``."""
        self.temperatures[name] = temperature
        self.normed[name] = normalise_by_rules(reward, temperature, vocabulary="world")  # the map's world rewards

    def __call__(self, images: Any, prompts: list[str]) -> dict[str, np.ndarray]:
        """``{objective: scores (N,)}`` for every ``raw/<r>``, ``tn/<r>`` and ensemble."""
        out: dict[str, np.ndarray] = {}
        for name, tn in self.normed.items():
            values, mask = pad_sets(tn.set_rewards(images, prompts))
            out[f"raw/{name}"] = values[:, 0].double().numpy()
            out[f"tn/{name}"] = normalize_sets(values, mask, tn.temperature).double().numpy()
        if len(self.ensemble) > 1:
            raw = torch.as_tensor(np.stack([out[f"raw/{m}"] for m in self.ensemble]))
            tns = torch.as_tensor(np.stack([out[f"tn/{m}"] for m in self.ensemble]))
            out["ens-mean-raw"] = combine(raw, "mean").numpy()
            out["ens-mean-tn"] = combine(tns, "mean").numpy()
            out["ens-ur-tn"] = combine(tns, "ur", self.ur_lam).numpy()
            out["disagreement-tn"] = tns.std(dim=0, unbiased=False).numpy()
        if self.prompt_free is not None:
            out["control/prompt-free"] = self.prompt_free.score(images, prompts).double().numpy()
        return out

    def reward(self, objective: str) -> Any:
        """The objective as a :class:`~textnorm_t2i.rewards.base.Reward` (what RL optimises); it scores exactly
        what ``self(images, prompts)[objective]`` gives."""
        if objective.startswith("raw/"):
            return self.normed[objective[4:]].reward
        if objective.startswith("tn/"):
            return self.normed[objective[3:]]
        members = [self.normed[m] for m in self.ensemble]
        if objective == "ens-mean-raw":
            return Ensemble([m.reward for m in members], mode="mean")
        if objective == "ens-mean-tn":
            return Ensemble(members, mode="mean")
        if objective == "ens-ur-tn":
            return Ensemble(members, mode="ur", lam=self.ur_lam)
        if objective == "control/prompt-free" and self.prompt_free is not None:
            return self.prompt_free
        raise InputError(f"unknown objective {objective!r}")
