"""``shapes-pref``: a CLIP-like proxy fine-tuned on simulated pairwise preferences (Bradley-Terry).

1. Prompts from every world subset, disjoint from TIA2-Shapes' prompts (another sampling seed, and any
   overlap removed); ``samples_per_prompt`` generator samples each.
2. Every pair of samples of a prompt is compared by a simulated rater: the image the oracle judges
   aligned wins; when both verdicts agree, the image with more coloured pixels wins with probability
   ``0.5 + look_preference`` (a mild, documented look preference, as real raters have); then the answer
   is flipped with probability ``flip``.
3. Bradley-Terry loss ``-log sigmoid(r(x_win, y) - r(x_lose, y))`` plus ``reg_coef`` x the squared
   distance of the weights to the base model's; a held-out set of prompts' comparisons picks the step
   (early stopping with ``patience``), and its weights are kept.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.generate.load import load_generator
from textnorm_t2i.io import write_text_atomic
from textnorm_t2i.rewards.perceive import look
from textnorm_t2i.rewards.registry import load_reward
from textnorm_t2i.rewards.train_config import PrefTrainConfig
from textnorm_t2i.rundir import mark_run_dir, prepare_run_dir
from textnorm_t2i.world.grammar import SUBSETS, sample_prompts
from textnorm_t2i.world.oracle import judge


def preference_prompts(prompts_per_subset: int = 100, seed: int = 0) -> list[str]:
    """The prompts of shapes-pref's training data (none is a TIA2-Shapes caption); studies keep theirs apart."""
    taken = {c for s in load_benchmark("shapes").values() for c in s.captions}
    prompts = []
    for subset in SUBSETS:
        pool = sample_prompts(subset, prompts_per_subset + 60, seed=50_000 + seed)
        prompts += [p for p in pool if p not in taken][:prompts_per_subset]
    return prompts


def preference_data(cfg: PrefTrainConfig, progress: bool = True) -> dict:
    """Generated images, their prompts, oracle verdicts, looks and the simulated comparisons."""
    from tqdm.auto import tqdm

    prompts = preference_prompts(cfg.prompts_per_subset, cfg.seed)
    pipe = load_generator("shapes")
    rng = random.Random(cfg.seed)
    images, owners, verdicts, looks = [], [], [], []
    for i, prompt in enumerate(tqdm(prompts, desc="preference samples", disable=not progress)):
        batch = pipe([prompt] * cfg.samples_per_prompt, seed=cfg.seed * 1_000_003 + i,
                     num_inference_steps=cfg.sampling_steps, output_type="pt").images
        for x in batch:
            arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            images.append(x)
            owners.append(i)
            verdicts.append(judge(arr, prompt).aligned)
            looks.append(look(arr))
    pairs = []
    for i in range(len(prompts)):
        idx = [j for j in range(i * cfg.samples_per_prompt, (i + 1) * cfg.samples_per_prompt)]
        for a, b in itertools.combinations(idx, 2):
            if verdicts[a] != verdicts[b]:
                a_wins = verdicts[a]
            else:
                better_look = looks[a] > looks[b] if looks[a] != looks[b] else rng.random() < 0.5
                a_wins = better_look if rng.random() < 0.5 + cfg.look_preference else not better_look
            if rng.random() < cfg.flip:
                a_wins = not a_wins
            pairs.append((a, b) if a_wins else (b, a))
    rng.shuffle(pairs)
    pairs = pairs[: cfg.max_comparisons]
    return {"prompts": prompts, "images": torch.stack(images), "owner": owners, "verdicts": verdicts,
            "pairs": pairs}


def train_pref_reward(cfg: PrefTrainConfig, out_dir: str | Path, progress: bool = True,
                      overwrite: bool = False) -> Path:
    """Train ``shapes-pref``; writes ``config.json``, ``model.safetensors``, ``train_log.csv`` and ``data.json``."""
    from tqdm.auto import tqdm

    lock, _ = prepare_run_dir(out_dir, kind="reward", overwrite=overwrite, marker="config.json",
                              resumable=False)
    try:
        mark_run_dir(out_dir, "reward")
        t0 = time.time()
        data = preference_data(cfg, progress)
        seconds_data = time.time() - t0
        reward = load_reward(cfg.base)
        model = reward.model
        model.requires_grad_(True).train()
        base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        prompts, images, owner = data["prompts"], data["images"], data["owner"]
        split = random.Random(cfg.seed + 1)
        held = set(split.sample(range(len(prompts)), max(1, round(cfg.holdout * len(prompts)))))
        train = [p for p in data["pairs"] if owner[p[0]] not in held]
        valid = [p for p in data["pairs"] if owner[p[0]] in held]
        enc = reward.tokenizer(prompts, padding=True, return_tensors="pt")
        optimizer = torch.optim.AdamW([p for p in model.parameters()], lr=cfg.lr, weight_decay=0.0)

        def scores(idx: list[int]) -> torch.Tensor:
            img = F.normalize(model.encode_images(images[idx]), dim=-1)
            who = torch.tensor([owner[i] for i in idx])
            txt = F.normalize(model.encode_texts(enc["input_ids"][who], enc["attention_mask"][who].float()), dim=-1)
            return model.logit_scale.exp().clamp(max=100.0) * (img * txt).sum(-1)

        def bt_loss(pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, float]:
            win, lose = scores([a for a, _ in pairs]), scores([b for _, b in pairs])
            return -F.logsigmoid(win - lose).mean(), float((win > lose).float().mean())

        def held_out() -> tuple[float, float]:
            model.eval()
            with torch.no_grad():
                losses = [bt_loss(valid[lo: lo + 512]) for lo in range(0, len(valid), 512)]
            model.train()
            weights = [min(512, len(valid) - lo) for lo in range(0, len(valid), 512)]
            return (float(np.average([float(x) for x, _ in losses], weights=weights)),
                    float(np.average([a for _, a in losses], weights=weights)))

        log = ["step,train_loss,heldout_loss,heldout_accuracy,seconds"]
        best_loss, best_acc0 = held_out()
        best_state, best_step, bad = copy.deepcopy(model.state_dict()), 0, 0
        log.append(f"0,,{best_loss:.5f},{best_acc0:.4f},{time.time() - t0:.1f}")
        rng = np.random.default_rng(cfg.seed)
        running = []
        for step in tqdm(range(1, cfg.steps + 1), desc=f"train {cfg.name}", disable=not progress):
            batch = [train[i] for i in rng.integers(0, len(train), size=cfg.batch_size)]
            loss, _ = bt_loss(batch)
            reg = sum(((p - base[n]) ** 2).sum() for n, p in model.named_parameters())
            optimizer.zero_grad(set_to_none=True)
            (loss + cfg.reg_coef * reg).backward()
            optimizer.step()
            running.append(float(loss.detach()))
            if step % cfg.eval_every == 0:
                vl, va = held_out()
                log.append(f"{step},{np.mean(running):.5f},{vl:.5f},{va:.4f},{time.time() - t0:.1f}")
                running = []
                if vl < best_loss:
                    best_loss, best_state, best_step, bad = vl, copy.deepcopy(model.state_dict()), step, 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
        model.load_state_dict(best_state)
        model.eval().requires_grad_(False)
        _, best_acc = held_out()
        model.config = {**{k: v for k, v in model.config.items() if k != "training"},
                        "training": {**cfg.to_dict(), "best_step": best_step}}
        reward.name = cfg.name
        out = Path(out_dir)
        reward.save_pretrained(out)
        write_text_atomic(out / "train_log.csv", "\n".join(log) + "\n")
        verdicts = data["verdicts"]
        summary = {"prompts": len(prompts), "images": len(images), "aligned_fraction": float(np.mean(verdicts)),
                   "comparisons": len(data["pairs"]), "train_comparisons": len(train),
                   "heldout_comparisons": len(valid), "flip": cfg.flip, "look_preference": cfg.look_preference,
                   "best_step": best_step, "heldout_loss": best_loss, "heldout_accuracy_before": best_acc0,
                   "heldout_accuracy": best_acc, "seconds_data": round(seconds_data, 1),
                   "seconds_total": round(time.time() - t0, 1)}
        write_text_atomic(out / "data.json", json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary), flush=True)
    finally:
        lock.release(remove=True)
    return Path(out_dir)
