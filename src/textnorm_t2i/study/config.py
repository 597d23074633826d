"""The study's typed config (``textnorm study run --config configs/study.yaml``).

One study compares *objectives* -- every embedded reward raw, its TextNorm version, ensembles of the
TextNorm rewards and, as a control, the mean ensemble of the raw rewards -- by what optimising each does
to gold alignment (the world's oracle), with best-of-n, reward-weighted SFT and RL (DDPO).

Example:
    >>> cfg = load_config(StudyConfig, None, ["rl.train.epochs=4"])
    >>> cfg.rl.train.epochs, cfg.pool.n_max, "tn/shapes-clip-a" in cfg.rl.objectives
    (4, 64, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from textnorm_t2i.config import MAX_SEED, Config, load_config, option
from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.config import DraftConfig, LoraConfig, RLConfig, SamplingConfig, SFTConfig

__all__ = ["StudyConfig", "load_config"]

EMBEDDED = ["shapes-clip-a", "shapes-clip-b", "shapes-pref", "shapes-perceive-clean", "shapes-perceive-noisy",
            "shapes-perceive-looks"]
LEARNED = ["shapes-clip-a", "shapes-clip-b", "shapes-pref"]
# SFT's controls (run beside its objectives, never ranked with them): the pool samples the oracle judges aligned
# (positive control) and a random share of each prompt's samples (drift control), as SFT's ``select``.
SFT_CONTROLS = {"control/aligned": "aligned", "control/random": "random"}
# DRaFT's controls, run beside its objectives and never ranked with them, both through DRAFT_CONTROL_REWARD's image
# encoder (the same model, scale and gradient path as the objectives):
# - control/random-direction, the drift control: the cosine of the image embedding with a random direction drawn
#   afresh for every image, a gradient of expectation zero; whatever happens to gold is drift alone. Its objective
#   has nothing to choose a learning rate by, so it runs at the largest of draft.lrs (the most drift).
# - control/prompt-free: the reward averaged over the training prompts, nothing about the image's prompt. It is
#   prompt-independent, not signal-free (a run raised it +5 and destroyed the images): read its gold beside its own
#   reward's gain, its fidelity and its distance.
DRAFT_CONTROLS = ("control/random-direction", "control/prompt-free")
SIGNAL_FREE_CONTROL = "control/random-direction"
DRAFT_CONTROL_REWARD = "shapes-clip-a"
DEFAULT_RL_OBJECTIVES = ["raw/shapes-clip-a", "tn/shapes-clip-a", "ens-mean-raw", "ens-mean-tn", "ens-ur-tn"]


@dataclass
class StudyPromptsConfig(Config):
    """Training and held-out evaluation prompts, sampled from every world subset with fixed seeds."""

    train_per_subset: int = option(24, "training prompts per subset (the best-of-n pool, SFT and RL train on them)",
                                   min=1, max=1000)
    eval_per_subset: int = option(56, "held-out evaluation prompts per subset (disjoint from training)", min=2,
                                  max=1000)
    seed: int = option(0, "seed of the prompt draw", min=0, max=MAX_SEED)


@dataclass
class PoolConfig(Config):
    """The shared best-of-n pool: n_max samples per training prompt, generated once, scored by every objective."""

    n_max: int = option(64, "samples per training prompt", min=1, max=4096)
    ns: list[int] = option([1, 2, 4, 8, 16, 32, 64], "the n of each best-of-n point (each must divide n_max)")
    steps: int = option(10, "DDIM steps", min=1, max=1000)
    guidance_scale: float = option(3.0, "classifier-free guidance scale", min=0, max=100)
    eta: float = option(1.0, "DDIM eta", min=0, max=1)
    chunk: int = option(128, "images per generation batch (a killed run resumes at the next chunk)", min=1)


@dataclass
class ObjectivesConfig(Config):
    """Which rewards, which ensembles, and how TextNorm's temperature is chosen."""

    rewards: list[str] = option(list(EMBEDDED), "rewards studied raw and with TextNorm")
    ensemble: list[str] = option(list(LEARNED), "members of the ensembles (mean / UR of TextNorm, mean of raw)")
    temperatures: list[float] | None = option(None, "TextNorm temperature grid (default: 10^-2 .. 10^2, 17 values)")
    lams: list[float] | None = option(None, "UR ensemble lambda grid (default: 0, .25, .5, 1, 2)")
    k: int = option(5, "cross-validation folds over TIA2-Shapes prompts", min=2)
    benchmark: str = option("shapes", "labelled benchmark the temperatures are cross-validated on")

    def check(self) -> None:
        if self.temperatures is not None and (not self.temperatures or any(t < 1e-3 for t in self.temperatures)):
            raise InputError(f"objectives.temperatures: give temperatures >= 0.001 (or leave it out for the default "
                             f"grid), got {self.temperatures}")
        if self.lams is not None and (not self.lams or any(lam < 0 for lam in self.lams)):
            raise InputError(f"objectives.lams: give lambdas >= 0 (or leave it out), got {self.lams}")


@dataclass
class MapConfig(Config):
    """Where TextNorm helps: shapes-perceive over look weight x perception noise, best-of-n TextNorm - raw."""

    enabled: bool = option(True, "run this stage")
    look_weights: list[float] = option([0.0, 1.0, 4.0, 16.0], "look weights w")
    noise_scales: list[float] = option([0.0, 0.5, 1.0, 2.0], "perception noise, as multiples of the noisy preset's")
    n: int = option(16, "best-of-n for the map (must divide pool.n_max)", min=1)
    diagnose_prompts: int = option(40, "clean scenes per subset for each cell's diagnosis", min=4)


# Keys of the embedded fine-tuning configs that the study sets for every run (its prompts, its folders, its
# evaluation, the objective being optimised): giving them in the study's config is an error, not silently ignored.
STUDY_OWNED = ("method", "seed", "generator", "out", "prompts", "reward", "eval", "log", "checkpoint_every",
               "checkpoints_total_limit")
SFT_OWNED = (*STUDY_OWNED, "sampling", "samples_per_prompt", "select")  # SFT trains on the study's shared pool
RL_OWNED = (*STUDY_OWNED, "sampling")  # RL samples as the study evaluates: eval.steps, pool.guidance_scale, eta 1
DRAFT_OWNED = (*STUDY_OWNED, "sampling")  # DRaFT: eval.steps, pool.guidance_scale, draft.eta


def study_sft() -> SFTConfig:
    """The SFT engine's settings the study uses by default (every objective the same)."""
    return SFTConfig(method="sft", steps=200, train_batch_size=32, lr=5e-4, lora=LoraConfig(rank=8, alpha=8.0))


def study_rl() -> RLConfig:
    """The RL engine's settings the study uses by default (every objective the same)."""
    return RLConfig(method="rl", epochs=32, batch_size=64, train_batch_size=32, images_per_prompt=8, lr=3e-3,
                    clip_range=1e-2, lora=LoraConfig(rank=8, alpha=8.0), timesteps_per_pass=5)


def study_draft() -> DraftConfig:
    """The DRaFT engine's settings the study uses by default (every objective the same)."""
    return DraftConfig(method="draft", steps=100, batch_size=8, truncation_steps=2, lr=2e-3,
                       lora=LoraConfig(rank=4, alpha=4.0), sampling=SamplingConfig(eta=0.0))


def _check_owned(section: str, train: Config, default: Config, owned: tuple[str, ...]) -> None:
    for key in owned:
        if getattr(train, key) != getattr(default, key):
            raise InputError(f"{section}.train.{key}: set by the study for every run; leave it out")


@dataclass
class SFTStudyConfig(Config):
    """Reward-weighted SFT on the pool's top samples per prompt, the same settings for every objective."""

    enabled: bool = option(True, "run this stage")
    objectives: list[str] = option(["raw/shapes-clip-a", "tn/shapes-clip-a", "raw/shapes-perceive-looks",
                                    "tn/shapes-perceive-looks", *DEFAULT_RL_OBJECTIVES[2:]], "objectives fine-tuned, "
                                   "and SFT's controls: control/aligned (the oracle's aligned samples) and "
                                   "control/random (a random top_fraction)")
    train: SFTConfig = option(study_sft(), "the SFT engine's settings (textnorm finetune --method sft "
                              "--print-config); the study sets " + ", ".join(SFT_OWNED), frozen_on_resume=True,
                              embedded=True)

    def check(self) -> None:
        _check_owned("sft", self.train, study_sft(), SFT_OWNED)


@dataclass
class RLStudyConfig(Config):
    """DDPO with the same settings for every objective; evaluated every ``eval_every`` epochs."""

    enabled: bool = option(True, "run this stage")
    objectives: list[str] = option(list(DEFAULT_RL_OBJECTIVES), "objectives optimised")
    eval_every: int = option(8, "evaluate (and keep a checkpoint) every this many epochs", min=1)
    train: RLConfig = option(study_rl(), "the RL engine's settings (textnorm finetune --method rl --print-config); "
                             "the study sets " + ", ".join(RL_OWNED), embedded=True)

    def check(self) -> None:
        _check_owned("rl", self.train, study_rl(), RL_OWNED)


@dataclass
class DraftStudyConfig(Config):
    """Reward-gradient fine-tuning (DRaFT-K) with the same settings for every objective; evaluated every
    ``eval_every`` steps on the held-out prompts (gold, fidelity, every objective, KL)."""

    enabled: bool = option(True, "run this stage")
    objectives: list[str] = option(list(DEFAULT_RL_OBJECTIVES), "objectives optimised (differentiable rewards: the "
                                   "perceive presets are not), and DRaFT's controls: control/random-direction (drift "
                                   "alone: "
                                   f"{DRAFT_CONTROL_REWARD}'s image embedding against a random direction per image) "
                                   f"and control/prompt-free ({DRAFT_CONTROL_REWARD} averaged over the training "
                                   "prompts: prompt-independent, yet exploitable)")
    eval_every: int = option(25, "evaluate (and keep a checkpoint) every this many steps", min=1)
    lrs: list[float] | None = option(None, "learning rates tried per objective: each objective's lr is the one whose "
                                     "short run (lr_steps) scores highest by the objective itself on the validation "
                                     "prompts (never by gold); default: train.lr for every objective")
    lr_steps: int = option(25, "steps of each learning-rate probe", min=1)
    eta: float = option(0.0, "DDIM eta of DRaFT's sampling (0: deterministic, as DRaFT and AlignProp): its models are "
                        "evaluated on images sampled the same way; their KL is always the stochastic policy's", min=0,
                        max=1)
    train: DraftConfig = option(study_draft(), "the DRaFT engine's settings (textnorm finetune --method draft "
                                "--print-config); the study sets " + ", ".join(DRAFT_OWNED), frozen_on_resume=True,
                                embedded=True)

    def check(self) -> None:
        _check_owned("draft", self.train, study_draft(), DRAFT_OWNED)
        if self.lrs is not None and (not self.lrs or any(lr <= 0 for lr in self.lrs)):
            raise InputError(f"draft.lrs: give learning rates > 0 (or leave it out), got {self.lrs}")


def base_tag(image_eta: float) -> str:
    """The tag of the base model's held-out evaluation whose images were sampled with DDIM eta ``image_eta`` (the
    study's own evaluation, ``base``, is the stochastic sampler's).

    Example:
        >>> base_tag(1.0), base_tag(0.0)
        ('base', 'base-eta0')
    """
    return "base" if image_eta == 1.0 else f"base-eta{image_eta:g}"


@dataclass
class EvalStudyConfig(Config):
    """Held-out evaluation of fine-tuned models: stochastic samples with the training sampler, fixed seeds."""

    samples_per_prompt: int = option(4, "samples per evaluation prompt", min=1)
    steps: int = option(10, "DDIM steps of the evaluation samples", min=1, max=1000)
    seed: int = option(1234, "seed of the evaluation noise", min=0, max=MAX_SEED)
    kl_min_std: float = option(0.05, "the KL from the base sums the steps with sigma >= this; the last stochastic "
                               "step is reported apart (its tiny sigma makes a one-level pixel change cost thousands "
                               "of nats)",
                               min=0)


@dataclass
class SideBySideConfig(Config):
    """Simulated side-by-side judgments of a TextNorm-family model against the best raw reward's model."""

    annotators: int = option(3, "annotators per pair (majority verdict per image)", min=1)
    flip: float = option(0.1, "probability an annotator reports the opposite of the truth", min=0, max=1)
    unsure: float = option(0.03, "probability an annotator abstains", min=0, max=1)
    validation_fraction: float = option(0.5, "share of evaluation prompts used to pick each family's best model",
                                        min=0, min_exclusive=True, max=1)
    best_of: int = option(16, "best-of-n models compared at this n (must divide pool.n_max)", min=1)


@dataclass
class StudyConfig(Config):
    """Does optimising a TextNorm reward give better-aligned models than the raw reward?"""

    seed: int = option(0, "seed of every random stream", min=0, max=MAX_SEED)
    generator: str = option("shapes", "'shapes' (the embedded model) or a diffusers pipeline folder")
    work: str = option("runs/study", "work folder: config, stage results, pool, checkpoints (resumable)",
                       mutable_on_resume=True)
    out: str = option("docs/study", "where report.html, results.json and samples.jsonl are written",
                      mutable_on_resume=True)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where generation and training run",
                                                    mutable_on_resume=True)
    bootstrap: int = option(1000, "bootstrap resamples for every confidence interval", min=100, max=100_000)
    prompts: StudyPromptsConfig = option(StudyPromptsConfig(), "prompts")
    objectives: ObjectivesConfig = option(ObjectivesConfig(), "objectives")
    pool: PoolConfig = option(PoolConfig(), "the shared best-of-n pool")
    map: MapConfig = option(MapConfig(), "the map of when TextNorm helps")
    sft: SFTStudyConfig = option(SFTStudyConfig(), "reward-weighted SFT")
    # RL settings may change on resume: each objective's run folder checks its own config when resumed.
    rl: RLStudyConfig = option(RLStudyConfig(), "RL (DDPO)", mutable_on_resume=True)
    draft: DraftStudyConfig = option(DraftStudyConfig(), "reward-gradient fine-tuning (DRaFT)")
    eval: EvalStudyConfig = option(EvalStudyConfig(), "held-out evaluation")
    side_by_side: SideBySideConfig = option(SideBySideConfig(), "side-by-side judgments")

    def objective_names(self) -> list[str]:
        """Every objective of the study, raw family first."""
        names = [f"raw/{r}" for r in self.objectives.rewards] + [f"tn/{r}" for r in self.objectives.rewards]
        if len(self.objectives.ensemble) > 1:
            names += ["ens-mean-raw", "ens-mean-tn", "ens-ur-tn"]
        return names

    def draft_controls(self) -> list[str]:
        """The controls DRaFT runs (every evaluation then scores them).

        Example:
            >>> StudyConfig().draft_controls()
            []
        """
        return [o for o in self.draft.objectives if o in DRAFT_CONTROLS] if self.draft.enabled else []

    def check(self) -> None:
        from textnorm_t2i.rewards.registry import reward_entry

        for name in self.objectives.rewards + self.objectives.ensemble:
            reward_entry(name)
        missing = [m for m in self.objectives.ensemble if m not in self.objectives.rewards]
        if missing:
            raise InputError(f"objectives.ensemble: {missing} are not in objectives.rewards")
        if len(self.objectives.ensemble) == 1:
            raise InputError("objectives.ensemble: give at least two members, or none")
        known = self.objective_names()
        # A section switched off (enabled: false) is not checked: its settings are not used.
        for section in [s for s in ("sft", "rl", "draft") if getattr(self, s).enabled]:
            for name in getattr(self, section).objectives:
                controls = {"sft": SFT_CONTROLS, "draft": DRAFT_CONTROLS}.get(section, {})
                if name not in known and name not in controls:
                    raise InputError(f"{section}.objectives: unknown objective {name!r} (known: "
                                     f"{', '.join(known + list(controls))})")
        if self.draft_controls() and DRAFT_CONTROL_REWARD not in self.objectives.rewards:
            raise InputError(f"draft.objectives: {self.draft_controls()[0]} needs {DRAFT_CONTROL_REWARD} in "
                             "objectives.rewards")
        if self.draft.enabled and all(o in DRAFT_CONTROLS for o in self.draft.objectives):
            raise InputError("draft.objectives: give at least one objective besides the controls "
                             "(or draft.enabled=false)")
        bad = [n for n in self.pool.ns if n < 1 or self.pool.n_max % n]
        if not self.pool.ns or bad:
            raise InputError(f"pool.ns: {bad or 'none given'}: each n must divide pool.n_max={self.pool.n_max}")
        for key, n in (("side_by_side.best_of", self.side_by_side.best_of),):
            if self.pool.n_max % n:
                raise InputError(f"{key}={n} does not divide pool.n_max={self.pool.n_max}")
        if self.side_by_side.flip + self.side_by_side.unsure > 1:
            raise InputError("side_by_side: flip + unsure must be <= 1")
        if self.map.enabled:
            if any(w < 0 for w in self.map.look_weights) or any(s < 0 for s in self.map.noise_scales):
                raise InputError("map: look weights and noise scales must be >= 0")
            if not self.map.look_weights or not self.map.noise_scales:
                raise InputError("map: give at least one look weight and one noise scale (or map.enabled=false)")
            if max(self.map.noise_scales, default=0) * 0.15 > 1:
                raise InputError("map.noise_scales: the largest scale makes a noise probability exceed 1 (max 6.6)")
            if self.pool.n_max % self.map.n:
                raise InputError(f"map.n={self.map.n} does not divide pool.n_max={self.pool.n_max}")
        if not self.work.strip() or not self.out.strip():
            raise InputError("work and out: give folders")
        if Path(self.work).resolve() == Path(self.out).resolve():
            raise InputError("out: give a folder other than work (the report is written apart from the stages)")


def load_study_config(path: str | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """The checked study config from a YAML file and ``--set`` overrides."""
    return load_config(StudyConfig, path, overrides)


def shipped_demo_config() -> Path:
    """The reduced study ``textnorm demo`` runs (shipped inside the package, so an installed wheel has it)."""
    return Path(str(resources.files("textnorm_t2i") / "data" / "configs" / "study-demo.yaml"))
