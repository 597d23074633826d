"""Training ``shapes-detect`` (:mod:`textnorm_t2i.rewards.detect`): predict the oracle's parse of an image.

1. Images: ``renders`` rendered scenes of every world subset and of random 0-4 object scenes (a third of
   them blurred, colour-jittered and noised as a generator would), and ``samples_per_prompt`` samples of
   the embedded generator for prompts of every subset, disjoint from TIA2-Shapes' prompts and from
   shapes-pref's (another sampling seed, and any overlap removed).
2. Labels: the oracle's parse of every image (its detector; no verdict against any prompt is used): the
   count of each colour x shape kind and of "unknown" blobs, and where each kind's single object stands.
3. Loss: cross-entropy of the counts plus ``position_weight`` x the Gaussian negative log-likelihood of
   single objects' positions; horizontal flips (every world shape is left-right symmetric) as augmentation;
   ``generator_share`` of each batch comes from the generator images.
   The generator images of ``holdout`` of the prompts are held out; the weights that parse them best
   (exact counts of every kind) are kept (evaluated every ``eval_every`` steps).
"""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.config import from_dict
from textnorm_t2i.generate.load import load_generator
from textnorm_t2i.io import write_json_atomic, write_text_atomic
from textnorm_t2i.rewards.detect import KINDS, MAX_COUNT, N_KINDS, DetectReward, ParseNet, kind_index
from textnorm_t2i.rewards.train_config import DetectTrainConfig
from textnorm_t2i.rewards.train_pref import preference_prompts
from textnorm_t2i.rewards.train_shapes import random_scene
from textnorm_t2i.rundir import mark_run_dir, prepare_run_dir
from textnorm_t2i.world.grammar import SUBSETS, sample_prompts, sample_spec
from textnorm_t2i.world.oracle import detect
from textnorm_t2i.world.perturb import perturb_all
from textnorm_t2i.world.scene import Scene, draw_scene, sample_scene


def parse_labels(images: np.ndarray) -> dict[str, np.ndarray]:
    """The oracle's parse of ``N x H x W x 3`` uint8 images: counts ``N x N_KINDS`` (capped at MAX_COUNT),
    single objects' positions ``N x len(KINDS) x 2`` as fractions of the canvas, and where those are defined.

    Example:
        >>> from textnorm_t2i.world.scene import render
        >>> labels = parse_labels(np.asarray(render("a red circle to the left of a blue square", seed=0))[None])
        >>> int(labels["counts"].sum()), int(labels["has_position"].sum())
        (2, 2)
    """
    n, size = len(images), images.shape[1]
    counts = np.zeros((n, N_KINDS), dtype=np.int64)
    pos = np.zeros((n, len(KINDS), 2), dtype=np.float32)
    for i, arr in enumerate(images):
        for obj in detect(arr):
            k = kind_index(obj.color, obj.shape)
            counts[i, k] += 1
            if k < len(KINDS):
                pos[i, k] = (obj.center[0] / size, obj.center[1] / size)
    has_position = counts[:, : len(KINDS)] == 1
    return {"counts": np.minimum(counts, MAX_COUNT), "positions": pos * has_position[..., None],
            "has_position": has_position}


def _render_images(cfg: DetectTrainConfig, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    rng = random.Random(f"detect-renders:{cfg.seed}")
    out = np.zeros((cfg.renders, 32, 32, 3), dtype=np.uint8)
    for i in tqdm(range(cfg.renders), desc="renders", disable=not progress):
        kind = rng.randrange(len(SUBSETS) + 2)
        if kind < len(SUBSETS):
            scene = sample_scene(sample_spec(SUBSETS[kind], rng), rng)
        elif kind == len(SUBSETS):
            scene = random_scene(rng)
        else:
            scene = Scene(32, ()) if rng.random() < 0.2 else random_scene(rng)
        image = draw_scene(scene)
        if rng.random() < 1 / 3:
            image = perturb_all(image, seed=rng.randrange(2**31))
        out[i] = np.asarray(image)
    return out


def detect_prompts(prompts_per_subset: int, seed: int = 0) -> list[str]:
    """The generator prompts of shapes-detect's training data: none is a TIA2-Shapes caption or a shapes-pref
    training prompt.

    Example:
        >>> len(detect_prompts(5))
        15
    """
    taken = {c for s in load_benchmark("shapes").values() for c in s.captions} | set(preference_prompts())
    prompts = []
    for subset in SUBSETS:
        pool = sample_prompts(subset, prompts_per_subset + 200, seed=70_000 + seed)
        prompts += [p for p in pool if p not in taken][:prompts_per_subset]
    return prompts


def _generator_images(cfg: DetectTrainConfig, prompts: list[str], progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    pipe = load_generator("shapes")
    todo = [p for p in prompts for _ in range(cfg.samples_per_prompt)]
    chunk = 128
    parts = []
    for n, lo in enumerate(tqdm(range(0, len(todo), chunk), desc="generator samples", disable=not progress)):
        x = pipe(todo[lo: lo + chunk], seed=cfg.seed * 1_000_003 + n, num_inference_steps=cfg.sampling_steps,
                 guidance_scale=cfg.guidance, output_type="pt", batch_size=chunk).images
        parts.append((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    return np.concatenate(parts) if parts else np.zeros((0, 32, 32, 3), dtype=np.uint8)


def detect_loss(model: ParseNet, images: torch.Tensor, labels: dict[str, torch.Tensor],
                position_weight: float) -> torch.Tensor:
    """Count cross-entropy plus ``position_weight`` x the Gaussian NLL of single objects' positions."""
    logits, pos, sigma = model(images)
    count_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels["counts"].reshape(-1))
    mask = labels["has_position"].float()
    nll = (torch.log(sigma)[..., None] + 0.5 * ((pos - labels["positions"]) / sigma[..., None]) ** 2).sum(-1)
    position_loss = (nll * mask).sum() / mask.sum().clamp_min(1)
    return count_loss + position_weight * position_loss


def _batch(images: np.ndarray, labels: dict[str, np.ndarray], index: np.ndarray,
           flip: np.ndarray | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = torch.from_numpy(images[index]).permute(0, 3, 1, 2).float() / 255.0
    positions = labels["positions"][index].copy()
    if flip is not None and flip.any():
        x[flip] = x[flip].flip(-1)
        has = labels["has_position"][index][flip]
        positions[flip, :, 0] = np.where(has, 1.0 - positions[flip, :, 0], 0.0)
    return x, {"counts": torch.from_numpy(labels["counts"][index]),
               "positions": torch.from_numpy(positions),
               "has_position": torch.from_numpy(labels["has_position"][index])}


@torch.no_grad()
def _evaluate(model: ParseNet, images: np.ndarray, labels: dict[str, np.ndarray], cfg: DetectTrainConfig) -> dict:
    model.eval()
    losses, exact = [], []
    for lo in range(0, len(images), 512):
        index = np.arange(lo, min(lo + 512, len(images)))
        x, y = _batch(images, labels, index)
        losses.append(float(detect_loss(model, x, y, cfg.position_weight)) * len(index))
        exact.append((model(x)[0].argmax(-1) == y["counts"]).all(dim=1).float().sum().item())
    model.train()
    return {"loss": sum(losses) / len(images), "parse_accuracy": sum(exact) / len(images)}


def train_detect_reward(config: DetectTrainConfig | dict, out_dir: str | Path, progress: bool = True,
                        overwrite: bool = False) -> Path:
    """Train ``shapes-detect``; writes ``config.json``, ``model.safetensors``, ``train_log.csv`` and ``data.json``.

    ``out_dir`` must be empty, or an earlier reward's folder with ``overwrite``.
    """
    from tqdm.auto import tqdm

    cfg = config if isinstance(config, DetectTrainConfig) else from_dict(DetectTrainConfig, dict(config))
    lock, _ = prepare_run_dir(out_dir, kind="reward", overwrite=overwrite, marker="config.json", resumable=False)
    try:
        mark_run_dir(out_dir, "reward")
        t0 = time.time()
        prompts = detect_prompts(cfg.prompts_per_subset, cfg.seed)
        random.Random(f"detect-split:{cfg.seed}").shuffle(prompts)
        n_held = round(cfg.holdout * len(prompts))
        generated = _generator_images(cfg, prompts, progress)
        rendered = _render_images(cfg, progress)
        per = cfg.samples_per_prompt
        held_images, train_generated = generated[: n_held * per], generated[n_held * per:]
        if not len(held_images):  # no generator prompts: hold out renders instead
            n_r = max(1, round(cfg.holdout * len(rendered)))
            held_images, rendered = rendered[:n_r], rendered[n_r:]
        images = np.concatenate([rendered, train_generated])
        labels = parse_labels(images)
        held_labels = parse_labels(held_images)
        seconds_data = time.time() - t0

        torch.manual_seed(cfg.seed)
        model = ParseNet({**cfg.model.to_dict(), "image_size": 32})
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = max(1, cfg.steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
            1 + math.cos(math.pi * min(1.0, s / cfg.steps)))))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{cfg.name}: parse network, {n_params / 1e3:.0f}k parameters; {len(rendered)} renders + "
              f"{len(train_generated)} generator images ({len(held_images)} held out), {cfg.steps} steps", flush=True)
        rng = np.random.default_rng(cfg.seed)
        log = ["step,train_loss,heldout_loss,heldout_parse_accuracy,seconds"]
        best = {"loss": math.inf, "step": 0, "parse_accuracy": -1.0, "state": None}
        before = _evaluate(model, held_images, held_labels, cfg)
        running = 0.0
        bar = tqdm(range(cfg.steps), desc=f"train {cfg.name}", disable=not progress)
        for step in bar:
            # A generator_share of each batch from the generator images, the rest from the renders.
            n_gen = 0 if not len(train_generated) else (
                cfg.batch_size if not len(rendered) else round(cfg.generator_share * cfg.batch_size))
            index = np.concatenate([rng.integers(0, len(rendered), cfg.batch_size - n_gen),
                                    len(rendered) + rng.integers(0, max(1, len(train_generated)), n_gen)])
            x, y = _batch(images, labels, index, flip=rng.random(cfg.batch_size) < 0.5)
            loss = detect_loss(model, x, y, cfg.position_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                held = _evaluate(model, held_images, held_labels, cfg)
                done = (step + 1) % cfg.eval_every or cfg.eval_every
                log.append(f"{step + 1},{running / done:.5f},{held['loss']:.5f},{held['parse_accuracy']:.4f},"
                           f"{time.time() - t0:.1f}")
                bar.set_postfix(heldout_loss=f"{held['loss']:.3f}", parse=f"{held['parse_accuracy']:.3f}")
                running = 0.0
                # The parse is what the reward reads: keep the weights that parse held-out images best (the
                # loss also weighs positions, whose likelihood keeps improving after the counts stop).
                if (held["parse_accuracy"], -held["loss"]) > (best["parse_accuracy"], -best["loss"]):
                    best = {**held, "step": step + 1, "state": copy.deepcopy(model.state_dict())}
        model.load_state_dict(best["state"])
        model.config = {**model.config, "training": {**cfg.to_dict(), "best_step": best["step"]}}
        out = Path(out_dir)
        DetectReward(model, name=cfg.name).save_pretrained(out)
        write_text_atomic(out / "train_log.csv", "\n".join(log) + "\n")
        write_json_atomic(out / "data.json", {
            "renders": len(rendered), "generator_prompts": len(prompts) - n_held,
            "generator_images": len(train_generated), "heldout_images": len(held_images),
            "heldout_parse_accuracy_before": round(before["parse_accuracy"], 4),
            "heldout_parse_accuracy": round(best["parse_accuracy"], 4), "heldout_loss": round(best["loss"], 5),
            "best_step": best["step"], "seconds_data": round(seconds_data, 1),
            "seconds_total": round(time.time() - t0, 1)})
    finally:
        lock.release(remove=True)
    return Path(out_dir)
