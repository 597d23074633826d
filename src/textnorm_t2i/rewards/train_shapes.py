"""Training the embedded proxy rewards on rendered scenes with realistically noisy captions.

Captions describe the scene the way web alt-text describes photos: objects are listed, but a third
of the counts are omitted, vague or wrong, colours are sometimes missing, an object is sometimes not
mentioned at all, and spatial relations appear only now and then. No oracle verdict is ever used.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm_t2i.config import from_dict
from textnorm_t2i.io import write_text_atomic
from textnorm_t2i.rewards.shapes import ShapesDualEncoder, ShapesReward, contrastive_loss, reward_tokenizer
from textnorm_t2i.rewards.train_config import RewardTrainConfig
from textnorm_t2i.rundir import mark_run_dir, prepare_run_dir
from textnorm_t2i.world.grammar import Clause, Spec
from textnorm_t2i.world.scene import Scene, draw_scene, sample_scene
from textnorm_t2i.world.vocab import COLORS, LEAD_INS, NUMBER_WORD, PLURAL, RELATION_PHRASE, SHAPES

DEFAULTS: dict[str, Any] = RewardTrainConfig().to_dict()


def noisy_caption(scene: Scene, rng: random.Random, cfg: dict) -> str:
    """A realistically noisy caption of a scene.

    Example:
        >>> from textnorm_t2i.world.scene import SceneObject
        >>> scene = Scene(32, (SceneObject("circle", "red", (2, 2, 8, 8)),))
        >>> noisy_caption(scene, random.Random(0), {**DEFAULTS, "count_noise": 0, "color_drop": 0})
        'an image of a red circle'
    """
    groups = list(Counter((o.shape, o.color) for o in scene.objects).items())
    rng.shuffle(groups)
    if len(groups) > 1 and rng.random() < cfg["object_drop"]:
        groups = groups[:-1]
    phrases = []
    for (shape, color), n in groups:
        words_color = [] if rng.random() < cfg["color_drop"] else [color]
        shown = n
        if rng.random() < cfg["count_noise"]:
            mode = rng.choice(["omit", "vague", "wrong"])
            if mode == "wrong":
                shown = max(1, min(4, n + rng.choice([-1, 1])))
                if shown == n:
                    shown = n + 1 if n < 4 else n - 1
            else:
                noun = PLURAL[shape] if n > 1 or mode == "vague" else shape
                lead = ["some"] if mode == "vague" else ([] if n > 1 else ["a"])
                phrases.append(" ".join(lead + words_color + [noun]))
                continue
        noun = shape if shown == 1 else PLURAL[shape]
        phrases.append(" ".join([NUMBER_WORD[shown]] + words_color + [noun]))
    if len(scene.objects) == 2 and len(phrases) == 2 and rng.random() < cfg["relation_rate"]:
        a, b = scene.objects
        dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
        kind = ("left" if dx > 0 else "right") if abs(dx) >= abs(dy) else ("above" if dy > 0 else "below")
        first = phrases[0] if groups[0][0] == (a.shape, a.color) else phrases[1]
        second = phrases[1] if first is phrases[0] else phrases[0]
        body = f"{first} {RELATION_PHRASE[kind]} {second}"
    else:
        body = " and ".join(phrases)
    lead = rng.choice(["", "", *LEAD_INS])
    return f"{lead} {body}".strip()


def random_scene(rng: random.Random, size: int = 32) -> Scene:
    """A random scene of 1-4 objects of random shapes and colours."""
    n = rng.randint(1, 4)
    clauses = tuple(Clause(rng.choice(SHAPES), rng.choice(list(COLORS)), 1) for _ in range(n))
    return sample_scene(Spec(clauses), rng, size)


def train_reward(config: RewardTrainConfig | dict, out_dir: str | Path, progress: bool = True,
                 overwrite: bool = False) -> Path:
    """Train one proxy reward; writes ``<out_dir>/config.json``, ``model.safetensors`` and ``train_log.csv``.

    ``out_dir`` must be empty, or an earlier reward's folder with ``overwrite``.
    """
    from tqdm.auto import tqdm

    typed = config if isinstance(config, RewardTrainConfig) else from_dict(RewardTrainConfig, dict(config))
    cfg = typed.to_dict()
    lock, _ = prepare_run_dir(out_dir, kind="reward", overwrite=overwrite, marker="config.json",
                              resumable=False)
    try:
        mark_run_dir(out_dir, "reward")
        torch.manual_seed(cfg["seed"])
        tokenizer = reward_tokenizer()
        model = ShapesDualEncoder(cfg["model"], len(tokenizer))
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        warmup = max(1, cfg["steps"] // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
            1 + math.cos(math.pi * min(1.0, s / cfg["steps"])))))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{cfg['name']}: {cfg['model']['arch']}, {n_params / 1e3:.0f}k parameters, batch {cfg['batch_size']}, "
              f"{cfg['steps']} steps", flush=True)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        log = ["step,loss,seconds"]
        t0 = time.time()
        bar = tqdm(range(cfg["steps"]), desc=f"train {cfg['name']}", disable=not progress)
        for step in bar:
            rng = random.Random(f"{cfg['seed']}:{step}")
            scenes = [random_scene(rng) for _ in range(cfg["batch_size"])]
            images = torch.from_numpy(np.stack([np.asarray(draw_scene(s), dtype=np.float32) for s in scenes]))
            images = images.permute(0, 3, 1, 2) / 255.0
            enc = tokenizer([noisy_caption(s, rng, cfg) for s in scenes], padding=True, return_tensors="pt")
            loss = contrastive_loss(model, images, enc["input_ids"], enc["attention_mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % cfg["log_every"] == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                log.append(f"{step + 1},{loss.item():.5f},{time.time() - t0:.1f}")
        model.config = {**cfg["model"], "training": {k: v for k, v in cfg.items() if k != "model"}}
        ShapesReward(model, tokenizer, name=cfg["name"]).save_pretrained(out)
        write_text_atomic(out / "train_log.csv", "\n".join(log) + "\n")
    finally:
        lock.release(remove=True)
    return Path(out_dir)
