"""The study's objectives: each reward raw and with TextNorm, and ensembles -- with honest temperatures.

TextNorm's temperature of each reward (and the UR ensemble's lambda) is chosen by k-fold
cross-validation over the prompts of a labelled benchmark (TIA2-Shapes), with the same contrastive sets
the study optimises with (the rules), never on the study's own prompts. Objective names:

- ``raw/<reward>``, ``tn/<reward>``: one reward, raw or TextNorm-normalised;
- ``ens-mean-tn``, ``ens-ur-tn``: mean, and mean - lambda x std, of the members' TextNorm rewards;
- ``ens-mean-raw``: mean of the members' raw rewards (the control separating "ensemble" from "TextNorm");
- ``control/random-direction``: a dual encoder's image embedding against a random direction drawn for every image
  (:class:`RandomDirectionReward`: a gradient of expectation zero; DRaFT's drift control);
- ``control/prompt-free``: a raw reward averaged over a fixed list of prompts, whatever the image's prompt
  (:class:`PromptFreeReward`; prompt-independent, yet exploitable).

Scoring a batch once per member (:class:`ObjectiveScorer`) gives every objective at once: raw and
TextNorm rewards come from the same set rewards, ensembles from the member scores.

Example:
    >>> family("tn/shapes-clip-a"), family("ens-mean-raw"), family("ens-ur-tn"), family("control/random")
    ('textnorm', 'raw', 'textnorm', 'control')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textnorm_t2i.bench.evaluate import evaluate_subset, summarize
from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.calibrate.ensemble import Ensemble, combine
from textnorm_t2i.calibrate.select import DEFAULT_LAMS, DEFAULT_TEMPERATURES, cross_validate, kfold_assignment
from textnorm_t2i.calibrate.textnorm import normalize_sets, pad_sets
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import open_image
from textnorm_t2i.objectives.factory import load_members, normalise, normalise_by_rules
from textnorm_t2i.rewards.base import DualEncoderReward, Images, Reward, to_tensor
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
            "control/prompt-free": "control: a prompt-free reward",
            "control/random-direction": "control: a random direction per image"}[objective]


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


class RandomDirectionReward(Reward):
    """``scale x cosine(image embedding, u)`` of a dual-encoder ``reward``, with ``u`` a random unit direction drawn
    afresh for every image (seeded by ``seed`` and the image's pixels quantised to uint8): the reward's model, scale and
    gradient path, with a gradient whose expectation is zero. Optimising it moves a model without any signal, so
    what it does to gold is drift alone (DRaFT's drift control). The prompt is ignored.

    The direction is a function of the quantised pixels: runs are reproducible bit for bit where the images are
    (one machine, one setup, resumed or not), and any last-bit difference of an image (another thread count, GPU
    kernels, another split of the batch) gives it another direction -- another walk, equally signal-free.

    Example:
        >>> class Mean(DualEncoderReward):
        ...     def embed_images(self, images):
        ...         return images.mean(dim=(2, 3))
        >>> r = RandomDirectionReward(Mean())
        >>> x = torch.rand(2, 3, 4, 4)
        >>> bool(torch.equal(r.score(x, ["a", "b"]), r.score(x, ["c", "d"])))  # the same images, the same directions
        True
    """

    def __init__(self, reward: DualEncoderReward, seed: int = 0):
        super().__init__(device=reward.device, dtype=reward.dtype, batch_size=reward.batch_size)
        self.reward, self.seed = reward, int(seed)
        self.name = f"random direction of {reward.name}"
        self.differentiable = reward.differentiable

    def direction(self, image: torch.Tensor, dim: int) -> torch.Tensor:
        """The unit direction of one ``3 x H x W`` image in [0, 1] (the same pixels give the same direction)."""
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes()
        digest = hashlib.blake2b(pixels, digest_size=8, key=str(self.seed).encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        return F.normalize(torch.randn(dim, generator=g), dim=0)

    def _score(self, images: Images, prompts: list[str], grad: bool) -> torch.Tensor:
        img = self.reward.image_embeddings(images)
        # One image at a time: a list of PIL images may mix sizes (the reward resizes them itself).
        pixels = images if isinstance(images, torch.Tensor) else [to_tensor([i])[0] for i in images]
        u = torch.stack([self.direction(x, img.shape[-1]) for x in pixels]).to(img.device)
        return self.reward.logit_scale() * (img * u).sum(-1)


class ObjectiveScorer:
    """Scores images by every objective at once (one pass of set rewards per member reward).

    Args:
        temperatures: ``{reward: temperature}`` (from :func:`choose_temperatures`).
        ensemble: the ensembles' members; ``ur_lam`` the UR ensemble's lambda.
        controls: when given, DRaFT's controls are scored too, on ``controls[0]``'s raw reward:
            ``control/random-direction`` (:class:`RandomDirectionReward`) and ``control/prompt-free``, the reward
            averaged over the prompts ``controls[1]`` (:class:`PromptFreeReward`).
        extra: more ``{name: Reward}`` scored raw and TextNorm under their own names (e.g. the map's
            perceive variants, with ``extra_temperatures``).
    """

    def __init__(self, temperatures: dict[str, float], ensemble: Sequence[str] = (), ur_lam: float = 0.5,
                 controls: tuple[str, Sequence[str]] | None = None):
        self.temperatures = dict(temperatures)
        self.ensemble, self.ur_lam = list(ensemble), float(ur_lam)
        self.normed = {}
        for name, t in self.temperatures.items():
            spec = RewardSpec(name=name, textnorm=True, temperature=t)
            self.normed[name] = normalise(load_members(spec)[0], spec)
        self.controls: dict[str, Reward] = {}
        if controls:
            reward = self.normed[controls[0]].reward
            self.controls = {"control/random-direction": RandomDirectionReward(reward),
                             "control/prompt-free": PromptFreeReward(reward, controls[1])}

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
        for name, control in self.controls.items():
            out[name] = control.score(images, prompts).double().numpy()
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
        if objective in self.controls:
            return self.controls[objective]
        raise InputError(f"unknown objective {objective!r}")
