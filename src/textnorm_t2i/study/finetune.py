"""The study's fine-tuning runs: reward-weighted SFT on the shared pool and DDPO, one objective at a time.

Both start from a freshly loaded generator with a new LoRA adapter (same seed for every objective), get
the same compute, and are evaluated on the held-out prompts by :meth:`Study.evaluate`.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.common import adapters_off
from textnorm_t2i.finetune.config import (
    DraftConfig,
    EvalConfig,
    LogConfig,
    PromptsConfig,
    RLConfig,
    SamplingConfig,
    SFTConfig,
)
from textnorm_t2i.finetune.draft import run_draft
from textnorm_t2i.finetune.rl import run_rl
from textnorm_t2i.finetune.sft import SFTPool, run_sft
from textnorm_t2i.rewards.spec import RewardSpec
from textnorm_t2i.study.analysis import per_prompt, split_prompts
from textnorm_t2i.study.config import SFT_CONTROLS, SIGNAL_FREE_CONTROL, StudyConfig
from textnorm_t2i.world.truth import WorldTruth

if TYPE_CHECKING:  # run.py runs these stages (a type only: no import cycle at run time)
    from textnorm_t2i.study.run import Study


def slug(objective: str) -> str:
    """A file-name form of an objective name.

    Example:
        >>> slug("tn/shapes-clip-a")
        'tn-shapes-clip-a'
    """
    return objective.replace("/", "-")


def logged_reward(cfg: StudyConfig) -> RewardSpec:
    """The reward a study run logs beside its objective (raw and TextNorm columns): the ensemble's first member,
    else the first reward. (The objective itself is passed to the run.)"""
    return RewardSpec(name=(cfg.objectives.ensemble or cfg.objectives.rewards)[0])


def sft_config(study: Study, objective: str) -> SFTConfig:
    """The SFT config of one objective's run: the study's ``sft.train`` with what the study sets for every run
    (its pool's sampler and prompts, the run folder, the selection, one evaluation at the end)."""
    cfg = study.cfg
    return replace(cfg.sft.train, seed=cfg.seed, generator=cfg.generator, out=str(study.work / "sft" / slug(objective)),
                   prompts=PromptsConfig(list=study.flat("train")),
                   sampling=SamplingConfig(steps=cfg.pool.steps, guidance_scale=cfg.pool.guidance_scale,
                                           eta=cfg.pool.eta),
                   samples_per_prompt=cfg.pool.n_max, select=SFT_CONTROLS.get(objective, "reward"),
                   reward=logged_reward(cfg),
                   eval=EvalConfig(every=cfg.sft.train.steps), checkpoint_every=cfg.sft.train.steps,
                   checkpoints_total_limit=1, log=LogConfig(report_to=["csv"]))


def sft_one(study: Study, objective: str) -> dict:
    """SFT (the one engine, :func:`~textnorm_t2i.finetune.sft.run_sft`) on the study's pool selected by
    ``objective`` (or a control); evaluated held-out by the study at the last step."""
    cfg = sft_config(study, objective)
    t0 = time.time()
    scores = study.pool_scores()
    prompts = [q for q in study.flat("train") for _ in range(study.cfg.pool.n_max)]
    gold = scores["gold"].reshape(-1)
    rewards = gold if objective in SFT_CONTROLS else scores[objective].reshape(-1)
    pool = SFTPool(study.load_pool("latents"), prompts, np.asarray(rewards, dtype=np.float64), gold)
    reward = None if objective in SFT_CONTROLS else study.scorer.reward(objective)
    made: list[StudyEvaluator] = []

    def make_evaluator(trainee: Any, out: Any) -> StudyEvaluator:
        made.append(StudyEvaluator(study, objective, trainee, "sft"))
        return made[-1]

    folder = run_sft(cfg, progress=study.progress, overwrite=True, pool=pool, reward=reward,
                     make_evaluator=make_evaluator, truth=WorldTruth())
    data = json.loads((folder / "data.json").read_text())
    evals = read_eval_csv(folder / "eval.csv")
    tag, summary = made[-1].last
    return {"tag": tag, "summary": summary, "kept": data["kept"], "kept_gold": data["gold_kept"],
            "pool_gold": data["gold_all"], "final_loss": evals[-1].get("train_loss", float("nan")),
            "seconds": round(time.time() - t0, 1)}


class StudyEvaluator:
    """RL's periodic evaluation in the study: the held-out prompts, every objective, gold, fidelity and KL.

    At step 0 the adapted model equals the base model (LoRA's B matrices start at zero), so the base
    evaluation (with images sampled at ``image_eta``, as the run's own) is reused rather than sampled again.
    """

    def __init__(self, study: Study, objective: str, trainee: Any, method: str = "rl", image_eta: float = 1.0):
        self.study, self.objective, self.trainee, self.method = study, objective, trainee, method
        self.prompts, self.image_eta = study.flat("eval"), image_eta

    def __call__(self, step: int, extra: dict | None = None, unet: Any = None) -> dict:
        tag = f"{self.method}-{slug(self.objective)}-{step:04d}"
        if step == 0:
            import shutil

            base, summary = self.study.base_evaluation(self.image_eta)
            for ext in (".json", ".safetensors"):
                shutil.copyfile(self.study.work / "eval" / f"{base}{ext}", self.study.work / "eval" / f"{tag}{ext}")
        else:
            summary = self.study.evaluate(tag, unet=unet, base=adapters_off(unet), backend=self.trainee.backend,
                                          image_eta=self.image_eta)
        self.last = (tag, summary)
        if self.objective not in summary["scores"] and self.objective not in SFT_CONTROLS:
            raise InputError(f"the evaluation {tag!r} has no score of {self.objective!r} (it was made before that "
                             "objective was configured): run the study with --redo base")
        nan = {"mean": float("nan")}
        row = {"step": step, "tag": tag, "gold": summary["gold"]["mean"], "fidelity": summary["fidelity"]["mean"],
               "kl": summary["kl"]["mean"], "kl_last_step": summary.get("kl_last_step", nan)["mean"],
               "drift": summary.get("drift", nan)["mean"],
               # SFT's controls optimise no reward: their "objective" is the gold they were selected by.
               "objective": summary["scores"].get(self.objective, summary["gold"])["mean"]}
        row.update({f"score:{k}": v["mean"] for k, v in summary["scores"].items()})
        row.update({f"train_{k}": v for k, v in (extra or {}).items()})
        return row

    def save_base(self) -> None:
        """Nothing to save: the base evaluation is the study's ``base`` stage."""

    def load_base(self) -> None:
        """Nothing to load (see :meth:`save_base`)."""


def rl_config(study: Study, objective: str) -> RLConfig:
    """The RL config of one objective's run: the study's ``rl.train`` with its prompts, folder and evaluation (the
    same for every objective but the folder; the reward is passed to the run)."""
    cfg, rc = study.cfg, study.cfg.rl
    return replace(rc.train, seed=cfg.seed, generator=cfg.generator, out=str(study.work / "rl" / slug(objective)),
                   prompts=PromptsConfig(list=study.flat("train")), reward=logged_reward(cfg),
                   sampling=SamplingConfig(steps=cfg.eval.steps, guidance_scale=cfg.pool.guidance_scale, eta=1.0),
                   eval=EvalConfig(every=rc.eval_every), checkpoint_every=rc.eval_every)


def read_eval_csv(path: Any) -> list[dict]:
    """The rows of a run's ``eval.csv``, numbers as floats (the tag kept as text)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (v if k == "tag" else float(v)) for k, v in r.items()} for r in rows]


def rl_one(study: Study, objective: str) -> dict:
    """DDPO on ``objective`` (resumed from its last checkpoint when the run folder exists)."""
    cfg = rl_config(study, objective)
    t0 = time.time()
    evals = run_or_reuse(study, objective, cfg, run_rl, cfg.epochs, "rl")
    return {"evals": evals, "seconds": round(time.time() - t0, 1),
            "config": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "train_batch_size",
                                                     "images_per_prompt", "lr", "clip_range")}}


def draft_config(study: Study, objective: str, lr: float | None = None, steps: int | None = None,
                 folder: Path | None = None) -> DraftConfig:
    """The DRaFT config of one objective's run: the study's ``draft.train`` with its prompts, folder, sampler
    (``eval.steps``, ``pool.guidance_scale``, ``draft.eta``; its evaluations sample their images the same way) and
    evaluation (``lr``, ``steps``, ``folder``: a learning-rate probe's)."""
    cfg, dc = study.cfg, study.cfg.draft
    every = steps or dc.eval_every
    return replace(dc.train, seed=cfg.seed, generator=cfg.generator,
                   out=str(folder or study.work / "draft" / slug(objective)),
                   prompts=PromptsConfig(list=study.flat("train")), reward=logged_reward(cfg),
                   sampling=SamplingConfig(steps=cfg.eval.steps, guidance_scale=cfg.pool.guidance_scale, eta=dc.eta),
                   eval=EvalConfig(every=every), checkpoint_every=every, lr=lr or dc.train.lr,
                   steps=steps or dc.train.steps)


def run_or_reuse(study: Study, objective: str, cfg: RLConfig | DraftConfig, run: Callable[..., Path], last: int,
                 method: str, image_eta: float = 1.0) -> list[dict]:
    """Run ``cfg`` with the engine's ``run`` (resumed when its folder holds a checkpointed run; not run again when
    its ``eval.csv`` already reaches step ``last``), evaluated by the study; its evaluation rows."""
    folder = Path(cfg.out)
    done = (folder / "eval.csv").is_file() and any(r["step"] == last for r in read_eval_csv(folder / "eval.csv"))
    if not done:
        run(cfg, resume=(folder / "config.yaml").is_file(), progress=study.progress,
            reward=study.scorer.reward(objective),
            make_evaluator=lambda trainee, out: StudyEvaluator(study, objective, trainee, method, image_eta),
            truth=WorldTruth())
    return read_eval_csv(folder / "eval.csv")


def choose_draft_lr(study: Study, objective: str) -> tuple[float, dict[str, float]]:
    """The learning rate of ``objective``'s run: each of ``draft.lrs`` runs ``draft.lr_steps`` steps; the one whose
    last evaluation scores highest *by the objective itself* on the validation prompts wins (gold is never read).
    Returns the lr and each lr's validation score."""
    cfg, dc = study.cfg, study.cfg.draft
    validation, _ = split_prompts(study.flat("eval"), cfg.side_by_side.validation_fraction, cfg.seed)
    chosen = set(validation)
    scores: dict[str, float] = {}
    for lr in dc.lrs or []:
        folder = study.work / "draft" / f"lr-{lr:g}" / slug(objective)
        probe = draft_config(study, objective, lr, dc.lr_steps, folder)
        evals = run_or_reuse(study, objective, probe, run_draft, probe.steps, f"draftlr{lr:g}", dc.eta)
        records = [r for r in study.load_eval(evals[-1]["tag"]) if r["prompt"] in chosen]
        scores[f"{lr:g}"] = float(np.mean(per_prompt(records, lambda r: r["scores"][objective])))
    best = max(scores, key=scores.__getitem__)
    return float(best), scores


def draft_one(study: Study, objective: str) -> dict:
    """DRaFT on ``objective`` (its learning rate chosen first when ``draft.lrs`` is given, the largest for the
    signal-free control; resumed from its last checkpoint when the run folder exists); the study evaluates it every
    ``draft.eval_every`` steps."""
    t0 = time.time()
    lrs = study.cfg.draft.lrs
    if lrs and objective == SIGNAL_FREE_CONTROL:
        lr, probes = max(lrs), {}  # its objective is noise: nothing to choose by; the largest lr drifts the most
    else:
        lr, probes = choose_draft_lr(study, objective) if lrs else (None, {})
    cfg = draft_config(study, objective, lr)
    evals = run_or_reuse(study, objective, cfg, run_draft, cfg.steps, "draft", study.cfg.draft.eta)
    return {"evals": evals, "seconds": round(time.time() - t0, 1), "lr_probes": probes,
            "config": {k: getattr(cfg, k) for k in ("steps", "batch_size", "truncation_steps", "lr")}}
