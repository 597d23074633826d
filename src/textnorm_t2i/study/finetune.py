"""The study's fine-tuning runs: reward-weighted SFT on the shared pool and DDPO, one objective at a time.

Both start from a freshly loaded generator with a new LoRA adapter (same seed for every objective), get
the same compute, and are evaluated on the held-out prompts by :meth:`Study.evaluate`.
"""

from __future__ import annotations

import csv
import time
from typing import Any

import numpy as np
import torch


def slug(objective: str) -> str:
    """A file-name form of an objective name.

    Example:
        >>> slug("tn/shapes-clip-a")
        'tn-shapes-clip-a'
    """
    return objective.replace("/", "-")


def sft_one(study: Any, objective: str) -> dict:
    """Fine-tune LoRA on the top fraction of the pool by ``objective``; evaluate held-out."""
    from tqdm.auto import tqdm

    from textnorm_t2i.finetune.common import adapters_off, derived_seed
    from textnorm_t2i.finetune.lora import add_lora, save_lora_folder
    from textnorm_t2i.finetune.sft import select_top, sft_step_loss

    cfg, sc = study.cfg, study.cfg.sft
    t0 = time.time()
    scores = study.pool_scores()
    prompts = [q for q in study.flat("train") for _ in range(cfg.pool.n_max)]
    keep = select_top(prompts, scores[objective].reshape(-1), sc.top_fraction)
    latents = study.load_pool("latents")[keep]
    kept_prompts = [prompts[i] for i in keep]
    backend = study.fresh_pipeline()
    unet = backend.unet
    params = add_lora(unet, sc.lora_rank, sc.lora_rank, seed=cfg.seed)
    optimizer = torch.optim.AdamW(params, lr=sc.lr)
    cond = backend.encode(kept_prompts)
    weights = torch.ones(len(keep), device=cond.device)
    scheduler = backend.pipe.scheduler
    unet.train()
    losses = []
    for step in tqdm(range(sc.steps), desc=f"sft {objective}", disable=not study.progress, leave=False):
        g = torch.Generator().manual_seed(derived_seed(cfg.seed, 8_001, step))
        loss = sft_step_loss(unet, scheduler, latents, cond, weights, sc.train_batch_size, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    unet.eval()
    save_lora_folder(unet, study.work / "sft" / slug(objective))
    train_seconds = time.time() - t0
    tag = f"sft-{slug(objective)}"
    summary = study.evaluate(tag, unet=unet, base=adapters_off(unet), backend=backend)
    return {"tag": tag, "summary": summary, "kept": int(len(keep)),
            "kept_gold": float(scores["gold"].reshape(-1)[keep].mean()),
            "pool_gold": float(scores["gold"].mean()), "final_loss": float(np.mean(losses[-20:])),
            "train_seconds": round(train_seconds, 1), "seconds": round(time.time() - t0, 1)}


class StudyEvaluator:
    """RL's periodic evaluation in the study: the held-out prompts, every objective, gold, fidelity and KL.

    At step 0 the adapted model equals the base model (LoRA's B matrices start at zero), so the base
    evaluation is reused rather than sampled again.
    """

    def __init__(self, study: Any, objective: str, trainee: Any):
        self.study, self.objective, self.trainee = study, objective, trainee
        self.prompts = study.flat("eval")

    def __call__(self, step: int, extra: dict | None = None, unet: Any = None) -> dict:
        from textnorm_t2i.finetune.common import adapters_off

        tag = f"rl-{slug(self.objective)}-{step:04d}"
        if step == 0:
            import shutil

            for ext in (".json", ".safetensors"):
                shutil.copyfile(self.study.work / "eval" / f"base{ext}", self.study.work / "eval" / f"{tag}{ext}")
            summary = self.study.result("base")["summary"]
        else:
            summary = self.study.evaluate(tag, unet=unet, base=adapters_off(unet), backend=self.trainee.backend)
        row = {"step": step, "tag": tag, "gold": summary["gold"]["mean"], "fidelity": summary["fidelity"]["mean"],
               "kl": summary["kl"]["mean"], "objective": summary["scores"][self.objective]["mean"]}
        row.update({f"score:{k}": v["mean"] for k, v in summary["scores"].items()})
        row.update({f"train_{k}": v for k, v in (extra or {}).items()})
        return row

    def save_base(self) -> None:
        """Nothing to save: the base evaluation is the study's ``base`` stage."""

    def load_base(self) -> None:
        """Nothing to load (see :meth:`save_base`)."""


def rl_config(study: Any, objective: str) -> Any:
    """The RL config of one objective's run (the same for every objective but the folder)."""
    from textnorm_t2i.finetune.config import as_config

    cfg, rc = study.cfg, study.cfg.rl
    return as_config("rl", {
        "method": "rl", "seed": cfg.seed, "generator": cfg.generator, "out": str(study.work / "rl" / slug(objective)),
        "prompts": {"list": study.flat("train")},
        "reward": {"name": cfg.objectives.ensemble[0] if cfg.objectives.ensemble else cfg.objectives.rewards[0]},
        "sampling": {"steps": rc.steps, "guidance_scale": cfg.pool.guidance_scale, "eta": 1.0},
        "lora": {"rank": rc.lora_rank, "alpha": rc.lora_rank},
        "eval": {"every": rc.eval_every}, "checkpoint_every": rc.eval_every,
        "epochs": rc.epochs, "batch_size": rc.batch_size, "train_batch_size": rc.train_batch_size,
        "images_per_prompt": rc.images_per_prompt,
        "timesteps_per_pass": 5, "lr": rc.lr, "clip_range": rc.clip_range})


def read_eval_csv(path: Any) -> list[dict]:
    """The rows of a run's ``eval.csv``, numbers as floats (the tag kept as text)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (v if k == "tag" else float(v)) for k, v in r.items()} for r in rows]


def rl_one(study: Any, objective: str) -> dict:
    """DDPO on ``objective`` (resumed from its last checkpoint when the run folder exists)."""
    from textnorm_t2i.finetune.rl import run_rl

    cfg = rl_config(study, objective)
    folder = study.work / "rl" / slug(objective)
    t0 = time.time()
    done = (folder / "eval.csv").is_file() and any(
        r["step"] == cfg.epochs for r in read_eval_csv(folder / "eval.csv"))
    if not done:
        reward = study.scorer.reward(objective)
        run_rl(cfg, resume=(folder / "config.yaml").is_file(), progress=study.progress, reward=reward,
               make_evaluator=lambda trainee, out: StudyEvaluator(study, objective, trainee))
    evals = read_eval_csv(folder / "eval.csv")
    return {"evals": evals, "seconds": round(time.time() - t0, 1),
            "config": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "train_batch_size",
                                                     "images_per_prompt", "lr", "clip_range")}}
