"""Best-of-n sampling: the classic over-optimisation curve.

For each prompt, ``n_max`` samples are drawn once; for each n in ``ns`` they are split into
``n_max / n`` disjoint groups, the best of each group by the optimised reward is kept, and the kept
images' optimised reward, raw reward, TextNorm reward and gold alignment (the oracle) are averaged.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.backend import DiffusionBackend
from textnorm_t2i.finetune.common import RandomStreams, default_device, print_accounting, training_prompts
from textnorm_t2i.finetune.config import BestOfNConfig, as_config
from textnorm_t2i.finetune.ddim import DDIMPolicy, sample_trajectories
from textnorm_t2i.finetune.models import load_pipeline
from textnorm_t2i.finetune.report import write_run_report
from textnorm_t2i.finetune.truth import GroundTruth, gold_verdicts
from textnorm_t2i.generate.grid import image_grid, to_pil
from textnorm_t2i.io import atomic_write
from textnorm_t2i.objectives.factory import build_views
from textnorm_t2i.rewards.base import as_reward
from textnorm_t2i.rundir import RunFolder


def best_of_n_curve(values: dict[str, np.ndarray], objective: np.ndarray, ns: list[int]) -> list[dict]:
    """Rows ``{n, <value>...}``: mean over prompts and groups of the values of each group's best sample.

    ``objective`` and every value array have shape ``(n_prompts, n_max)``.

    Example:
        >>> obj = np.array([[0.1, 0.9, 0.5, 0.2]])
        >>> best_of_n_curve({"gold": np.array([[1.0, 0.0, 1.0, 1.0]])}, obj, [1, 2, 4])
        [{'n': 1, 'gold': 0.75}, {'n': 2, 'gold': 0.5}, {'n': 4, 'gold': 0.0}]
    """
    n_prompts, n_max = objective.shape
    rows = []
    for n in ns:
        if n_max % n:
            raise InputError(f"best-of-n: n={n} does not divide n_max={n_max}")
        groups = objective.reshape(n_prompts, n_max // n, n)
        best = groups.argmax(axis=2)
        row: dict[str, Any] = {"n": n}
        for name, v in values.items():
            picked = np.take_along_axis(v.reshape(n_prompts, n_max // n, n), best[..., None], axis=2)
            row[name] = float(np.nanmean(picked))
        rows.append(row)
    return rows


def run_bon(config: BestOfNConfig | dict, progress: bool = True, overwrite: bool = False, reward: Any = None,
            truth: GroundTruth | None = None) -> Path:
    """Run best-of-n (``reward``: a reward or ``fn(images, prompts) -> scores`` replacing the config's objective);
    writes ``config.yaml``, ``bon.csv``, ``bon.png`` and a grid of the best-of-n_max images."""
    from tqdm.auto import tqdm

    cfg: BestOfNConfig = as_config("bon", config)  # type: ignore[assignment]
    run = RunFolder(cfg.out, cfg, overwrite=overwrite).open()
    try:
        out, streams = run.folder, RandomStreams(cfg.seed)
        objective, raw, normed = build_views(cfg.reward)
        if reward is not None:
            objective = as_reward(reward)
        pipe = load_pipeline(cfg.generator)
        pipe.to(default_device())
        backend = DiffusionBackend(pipe)
        run.start()
        prompts = training_prompts(cfg, truth)
        n_max = cfg.n_max
        policy = DDIMPolicy(pipe.scheduler.config, cfg.sampling.steps, eta=cfg.sampling.eta)
        print_accounting("bon", 1, len(prompts) * n_max, f" ({len(prompts)} prompts x {n_max})")
        values: dict[str, list] = {"objective": [], "raw_reward": [], "textnorm_reward": [], "gold_alignment": []}
        best_images = []
        for p_idx, prompt in enumerate(tqdm(prompts, desc="best-of-n", disable=not progress)):
            batch = [prompt] * n_max
            images = sample_trajectories(backend, batch, policy, cfg.sampling.guidance_scale,
                                         streams.bon_prompt(p_idx)).images
            obj = objective.score(images, batch).numpy()
            values["objective"].append(obj)
            values["raw_reward"].append(raw.score(images, batch).numpy())
            values["textnorm_reward"].append(normed.score(images, batch).numpy())
            gold = gold_verdicts(truth, images, batch)
            values["gold_alignment"].append(np.full(n_max, np.nan) if gold is None else gold)
            best_images.append(images[int(obj.argmax())])
        arrays = {k: np.stack(v) for k, v in values.items()}
        rows = best_of_n_curve(arrays, arrays["objective"], cfg.ns)
        with atomic_write(out / "bon.csv", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, out / "bon.png", cfg)
        # Per prompt and n, the mean over disjoint groups of each group's best (what the report's bands use).
        with atomic_write(out / "bon_samples.jsonl") as f:
            for n in cfg.ns:
                for i, prompt in enumerate(prompts):
                    row = best_of_n_curve({k: v[i:i + 1] for k, v in arrays.items()}, arrays["objective"][i:i + 1],
                                          [n])[0]
                    row["aligned"] = row.pop("gold_alignment")
                    f.write(json.dumps({"prompt": prompt, **row}) + "\n")
        with atomic_write(out / "grid.png", "wb") as f:
            image_grid(to_pil(torch.stack(best_images)), rows=len(best_images), scale=3,
                       labels=prompts).save(f, format="PNG")
        write_run_report(out, f"best-of-{n_max} by {objective.name}")
    finally:
        run.close()
    return out


def _plot(rows: list[dict], path: Path, cfg: BestOfNConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(ns, [r["objective"] for r in rows], "o-", label="optimised reward")
    ax[0].set_xscale("log", base=2)
    ax[0].set_xlabel("n")
    ax[0].set_title("optimised reward of the best of n")
    ax[1].plot(ns, [r["gold_alignment"] for r in rows], "o-", color="tab:green", label="gold (oracle)")
    ax[1].set_xscale("log", base=2)
    ax[1].set_xlabel("n")
    ax[1].set_ylim(0, 1)
    ax[1].set_title("gold alignment of the best of n")
    name = "+".join(cfg.reward.names)
    fig.suptitle(f"best-of-n, reward {name}{' + TextNorm' if cfg.reward.textnorm else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
