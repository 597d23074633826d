"""Evaluation during fine-tuning: fixed prompts and seeds, the ground truth's verdicts, and the run's log."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm_t2i.finetune.common import adapters_off, training_prompts, warm_caches
from textnorm_t2i.finetune.ddim import DDIMPolicy, sample_trajectories, sample_with_step_kl
from textnorm_t2i.finetune.truth import GroundTruth, judgments
from textnorm_t2i.generate.grid import image_grid, to_pil
from textnorm_t2i.io import atomic_write
from textnorm_t2i.rewards.base import Reward
from textnorm_t2i.rundir import note

GRID_IMAGES = 48  # evaluation images drawn in each step's grid
EVAL_COLUMNS = ("objective", "raw_reward", "textnorm_reward", "gold_alignment", "fidelity", "drift", "kl_base",
                "kl_last_step")
TRAIN_COLUMNS = ("objective", "gold_alignment", "fidelity")  # for training prompts evaluated too (train_ prefix)


class RunLog:
    """``eval.csv`` and ``samples.jsonl`` (always), and accelerate's trackers named in ``report_to``
    (TensorBoard, Weights & Biases), written by the main process only.

    A fresh run starts new files; a resumed run keeps the rows up to its checkpoint and drops the rest.
    """

    def __init__(self, out: Path, enabled: bool = True, report_to: Sequence[str] = ("csv",),
                 resume_step: int | None = None, project: str = "textnorm", config: dict | None = None):
        self.path = out / "eval.csv"
        self.samples_path = out / "samples.jsonl"
        self.enabled = enabled
        self.fields: list[str] | None = None
        self.trackers: list[Any] = []
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
            self.samples_path.unlink(missing_ok=True)
        else:
            self._truncate_after(resume_step)
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        for name in report_to:
            if name == "tensorboard":
                tracker = TensorBoardTracker("tensorboard", logging_dir=out)
            elif name == "wandb":
                tracker = WandBTracker(project, dir=str(out), name=out.name,
                                       resume="allow" if resume_step is not None else None)
            else:
                continue
            tracker.start()
            if config is not None:
                tracker.store_init_configuration(_flat(config))
            self.trackers.append(tracker)

    def close(self) -> None:
        """Finish the trackers (the csv and jsonl files are complete after every write)."""
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []

    def _truncate_after(self, step: int) -> None:
        """Keep the rows logged up to ``step`` (a resumed run redoes the rest)."""
        import json

        def kept_sample(line: str) -> bool:  # a line cut short by a killed run is dropped, not a crash
            try:
                record = json.loads(line)
            except ValueError:
                return False
            return (isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step
                    and isinstance(record.get("prompt"), str))

        if self.samples_path.exists():
            lines = self.samples_path.read_text(errors="replace").splitlines()
            with atomic_write(self.samples_path) as f:
                f.writelines(line + "\n" for line in lines if kept_sample(line))
        if not self.path.exists():
            return
        with self.path.open(newline="", errors="replace") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, list(reader)
        seen: set[int] = set()
        kept = []
        for r in rows:  # whole rows up to the checkpoint, each step once (a partial last row is dropped)
            if None in r.values() or None in r or not str(r.get("step", "")).isdigit():
                continue
            if int(r["step"]) <= step and int(r["step"]) not in seen:
                seen.add(int(r["step"]))
                kept.append(r)
        if not fields or not kept:
            self.path.unlink()
            return
        self.fields = list(fields)
        with atomic_write(self.path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(kept)

    def write(self, row: dict) -> None:
        """Append one evaluation row (its ``per_image`` records, when given, go to ``samples.jsonl``)."""
        import json

        samples = row.pop("per_image", None)
        if not self.enabled:
            return
        # Each append is one write of whole lines; a run killed in the middle leaves at most a partial last line,
        # which a resume drops (:meth:`_truncate_after`).
        if samples:
            with self.samples_path.open("a") as f:
                f.write("".join(json.dumps({"step": row["step"], **s}) + "\n" for s in samples))
        new = self.fields is None
        if new:
            self.fields = list(row)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields)
        if new:
            writer.writeheader()
        writer.writerow(row)
        with self.path.open("a", newline="") as f:
            f.write(text.getvalue())
        values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step" and v == v}
        for tracker in self.trackers:
            tracker.log(values, step=int(row["step"]))


def _flat(config: dict, prefix: str = "") -> dict:
    """A nested config as flat ``a.b`` keys with scalar values (what trackers store as hyper-parameters)."""
    out: dict = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class Evaluator:
    """Fixed prompts and seeds sampled deterministically (eta = 0) at every evaluation.

    Logs the optimised reward, the raw base reward, its TextNorm version, gold alignment (oracle, for
    world prompts), drift from the base model (mean squared pixel change on the same noise) and the KL of
    the stochastic (eta = 1) policy from the base on its own trajectories: ``kl_base`` over the steps with
    sigma >= ``eval.kl_min_std``, ``kl_last_step`` for the last stochastic step alone (nats per image).
    """

    def __init__(self, cfg: Any, backend: Any, objective: Reward, raw: Reward, textnorm: Reward, out: Path,
                 prompts: list[str], truth: GroundTruth | None = None):
        self.cfg, self.backend, self.out = cfg, backend, out
        self.objective, self.raw, self.textnorm = objective, raw, textnorm
        self.truth = truth
        per = cfg.eval.images_per_prompt
        trained = training_prompts(cfg, truth)[: cfg.eval.train_prompts] if cfg.eval.train_prompts else []
        groups = [("eval", p) for p in prompts] + [("train", p) for p in trained]
        self.prompts = [p for _, p in groups for _ in range(per)]
        self.split = [s for s, _ in groups for _ in range(per)]
        self.sample_index = [i % per for i in range(len(self.prompts))]
        self.policy = DDIMPolicy(backend.pipe.scheduler.config, cfg.eval.steps, eta=0.0)
        self.kl_policy = DDIMPolicy(backend.pipe.scheduler.config, cfg.eval.steps, eta=1.0)
        self.base_images: torch.Tensor | None = None

    def sample(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.eval.seed)
        return sample_trajectories(self.backend, self.prompts, self.policy, self.cfg.sampling.guidance_scale,
                                   g).images

    def kl(self, unet: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per image: the KL from the base summed over the steps with sigma >= ``eval.kl_min_std``, and that of
        the last stochastic step (zeros for the base model itself)."""
        stds = self.kl_policy.stds
        counted = [j for j, s in enumerate(stds) if s > 0 and s >= self.cfg.eval.kl_min_std]
        last = max((j for j, s in enumerate(stds) if s > 0), default=None)
        if unet is None or last is None:
            zeros = np.zeros(len(self.prompts))
            return zeros, zeros
        g = torch.Generator().manual_seed(self.cfg.eval.seed + 1)
        _, per_step = sample_with_step_kl(self.backend, self.prompts, self.kl_policy,
                                          self.cfg.sampling.guidance_scale, g, unet=unet, base=adapters_off(unet))
        return per_step[:, counted].sum(axis=1), per_step[:, last]

    def save_base(self) -> None:
        from safetensors.torch import save_file

        save_file({"images": self.base_images.contiguous()}, self.out / "base_eval.safetensors")

    def load_base(self) -> None:
        from safetensors.torch import load_file

        try:
            self.base_images = load_file(self.out / "base_eval.safetensors")["images"]
        except Exception as e:  # a missing or corrupt file: the base images are recomputed from the seed
            note(f"{self.out / 'base_eval.safetensors'} unreadable ({type(e).__name__}); base images recomputed")
            self.base_images = None

    def __call__(self, step: int, extra: dict | None = None, unet: Any = None) -> dict:
        if self.base_images is None and unet is not None and step > 0:
            with adapters_off(unet)():
                self.base_images = self.sample()
        images = self.sample()
        if self.base_images is None:
            self.base_images = images
        scores = {k: r.score(images, self.prompts).double().cpu().numpy()
                  for k, r in (("objective", self.objective), ("raw_reward", self.raw),
                               ("textnorm_reward", self.textnorm))}
        judged = judgments(self.truth, images, self.prompts)
        drift = ((images - self.base_images) ** 2).flatten(1).mean(1).double().cpu().numpy()
        kl_base, kl_last = self.kl(unet if step > 0 else None)
        values = {**scores, "drift": drift, "kl_base": kl_base, "kl_last_step": kl_last}
        if judged is not None:
            values["gold_alignment"] = np.array([float(j["aligned"]) for j in judged])
            values["fidelity"] = np.array([float(j["fidelity"]) for j in judged])
        # The evaluation prompts' means; training prompts evaluated too get train_ columns.
        row: dict[str, Any] = {"step": step}
        for split, prefix, keys in (("eval", "", EVAL_COLUMNS), ("train", "train_", TRAIN_COLUMNS)):
            mask = np.array([s == split for s in self.split])
            if mask.any():
                row.update({prefix + k: float(values[k][mask].mean()) if k in values else float("nan") for k in keys})
        row.update(extra or {})
        # One line per image in samples.jsonl: what the run report's error bands and verdicts come from.
        row["per_image"] = [{"prompt": p, "sample": self.sample_index[i], "split": self.split[i],
                             **{k: round(float(v[i]), 6) for k, v in scores.items()},
                           "drift": round(float(drift[i]), 8), "kl_base": round(float(kl_base[i]), 6),
                           "kl_last_step": round(float(kl_last[i]), 6),
                           **({"aligned": judged[i]["aligned"], "reasons": judged[i]["reasons"],
                              "fidelity": judged[i]["fidelity"]} if judged else {})}
                          for i, p in enumerate(self.prompts)]
        grids = self.out / "grids"
        grids.mkdir(parents=True, exist_ok=True)
        labels = [p if judged is None else f"{p} [{'ALIGNED' if j['aligned'] else 'NOT ALIGNED'}]"
                  for p, j in zip(self.prompts, judged or [None] * len(self.prompts))]
        shown = slice(0, GRID_IMAGES)  # the first images only: a grid of hundreds is unreadable
        with atomic_write(grids / f"step_{step:05d}.png", "wb") as f:
            image_grid(to_pil(images[shown]), rows=len(images[shown]), scale=3, labels=labels[shown]).save(
                f, format="PNG")
        return row


def start_logging(cfg: Any, run: Any, model: Any, evaluator: Any, main: bool, start: int, resumed: bool,
                  first_row: dict, truth: GroundTruth | None = None) -> tuple[RunLog, list[str]]:
    """What RL and DRaFT do once a run is known to be valid, in this order: :meth:`RunFolder.start` (set an
    earlier run aside, mark the folder, write the config), open the logs (kept up to the checkpoint on resume),
    fill the text caches in one fixed order (so a resumed run is bitwise the same) and, on a fresh start,
    evaluate the base model as step 0 (``first_row``: the training columns of that row).

    Returns the log and the training prompt pool.
    """
    run.start()
    log = RunLog(run.folder, enabled=main, report_to=cfg.log.report_to, project=cfg.log.project,
                 resume_step=start if resumed else None, config=cfg.to_dict())
    pool = training_prompts(cfg, truth)
    warm_caches(model.backend, [model.objective, model.raw, model.textnorm],
                pool + (evaluator.prompts if evaluator is not None else []))
    if evaluator is not None and start == 0:
        with torch.no_grad():
            log.write(evaluator(0, first_row))
        evaluator.save_base()
    return log, pool
