"""Training the embedded text-to-image model from scratch on rendered scenes.

Read it top to bottom: config -> model -> (resume) -> loop {batch, loss, step, EMA, log, checkpoint}.
Every batch is a pure function of (seed, step), and checkpoints hold weights, EMA, optimizer,
scheduler and RNG states, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textnorm_t2i.config import from_dict
from textnorm_t2i.generate.config import GeneratorTrainConfig
from textnorm_t2i.generate.grid import image_grid
from textnorm_t2i.generate.pipeline import ShapesPipeline, build_pipeline
from textnorm_t2i.generate.unet_forward import unet_output
from textnorm_t2i.io import write_text_atomic
from textnorm_t2i.rundir import GracefulStop, RunFolder
from textnorm_t2i.world.grammar import Spec, sample_spec
from textnorm_t2i.world.scene import draw_scene, sample_scene

_PHRASINGS = {"to the left of": ["left of", "on the left of"], "to the right of": ["right of", "on the right of"]}


def caption_for(spec: Spec, rng: random.Random) -> str:
    """A varied phrasing of a spec: clause order, "one"/"a", relation wording, lead-in."""
    prompt = spec.to_prompt()
    if spec.relation is None and len(spec.clauses) == 2 and rng.random() < 0.5:
        prompt = spec.__class__(spec.clauses[::-1], None, spec.lead_in).to_prompt()
    for phrase, variants in _PHRASINGS.items():
        if phrase in prompt and rng.random() < 0.4:
            prompt = prompt.replace(phrase, rng.choice(variants))
    if rng.random() < 0.15:
        prompt = prompt.replace("a ", "one ", 1) if prompt.startswith("a ") and spec.lead_in == "" else prompt
    return prompt


def make_batch(seed: int, step: int, batch_size: int, cfg: GeneratorTrainConfig,
               size: int = 32) -> tuple[list[str], torch.Tensor]:
    """Captions and rendered images (in [-1, 1]) for one step; a pure function of (seed, step)."""
    rng = random.Random(f"{seed}:{step}")
    subsets, weights = zip(*cfg.subset_weights.items())
    captions, images = [], []
    for _ in range(batch_size):
        spec = sample_spec(rng.choices(subsets, weights)[0], rng)
        scene = sample_scene(spec, rng, size)
        images.append(np.asarray(draw_scene(scene), dtype=np.float32))
        captions.append("" if rng.random() < cfg.caption_dropout else caption_for(spec, rng))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return captions, x


def _ema_update(ema: dict[str, torch.Tensor], modules: dict[str, torch.nn.Module], decay: float) -> None:
    with torch.no_grad():
        for name, module in modules.items():
            for k, v in module.state_dict().items():
                key = f"{name}.{k}"
                if v.dtype.is_floating_point:
                    ema[key].mul_(decay).add_(v, alpha=1 - decay)
                else:
                    ema[key].copy_(v)


def ema_pipeline(pipe: ShapesPipeline, ema: dict[str, torch.Tensor]) -> ShapesPipeline:
    """A copy of the pipeline carrying the EMA weights."""
    out = copy.deepcopy(pipe)
    for name in ("unet", "text_encoder"):
        getattr(out, name).load_state_dict({k[len(name) + 1:]: v for k, v in ema.items() if k.startswith(name + ".")})
    return out


def save_sample_grid(pipe: ShapesPipeline, prompts: list[str], path: Path, seed: int = 0, per_prompt: int = 4) -> None:
    """A grid (one row per prompt) of samples, written next to a text file listing the prompts."""
    images = pipe([p for p in prompts for _ in range(per_prompt)], seed=seed).images
    image_grid(images, rows=len(prompts), scale=3, labels=prompts).save(path)


def train_generator(config: GeneratorTrainConfig | dict, out_dir: str | Path, resume: bool = False,
                    progress: bool = True, overwrite: bool = False) -> Path:
    """Train the generator; returns the folder of the final EMA pipeline (``<out_dir>/pipeline``)."""
    from tqdm.auto import tqdm

    cfg = config if isinstance(config, GeneratorTrainConfig) else from_dict(GeneratorTrainConfig, dict(config))
    run = RunFolder(out_dir, cfg, kind="generator", resume=resume, overwrite=overwrite).open()
    try:
        checkpoint = run.select()
        out = run.folder
        pipe = build_pipeline(cfg.model.to_dict(), seed=cfg.seed)
        unet, text_encoder, noise_scheduler = pipe.unet, pipe.text_encoder, pipe.scheduler
        modules = {"unet": unet, "text_encoder": text_encoder}
        params = [p for m in modules.values() for p in m.parameters()]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
        ema = {f"{n}.{k}": v.detach().clone() for n, m in modules.items() for k, v in m.state_dict().items()}
        start, elapsed = 0, 0.0
        if checkpoint is not None:
            state = checkpoint.restore({**modules, "ema": ema}, optimizer, lr_schedule)
            start, elapsed = state["step"], float(state.get("seconds", 0.0))
        run.start()
        n_params = sum(p.numel() for p in params)
        print(f"generator: {n_params / 1e6:.2f}M parameters, batch {cfg.batch_size}, steps {start}->{cfg.steps}, "
              f"{cfg.batch_size * cfg.steps:,} samples in all", flush=True)
        log_path = out / "train_log.csv"
        _start_log(log_path, start)
        tok = pipe.tokenizer
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train generator",
                   disable=not progress)
        t0, running = time.time() - elapsed, []  # the log's seconds count the whole run, across resumes
        folder = None
        with GracefulStop() as stop:
            for step in bar:
                captions, x0 = make_batch(cfg.seed, step, cfg.batch_size, cfg)
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                noise = torch.randn(x0.shape, generator=g)
                t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(x0),), generator=g)
                xt = noise_scheduler.add_noise(x0, noise, t)
                target = noise_scheduler.get_velocity(x0, noise, t) if noise_scheduler.config.prediction_type == \
                    "v_prediction" else noise
                enc = tok(captions, padding="max_length", truncation=True, max_length=tok.model_max_length,
                          return_tensors="pt")
                hidden = text_encoder(input_ids=enc["input_ids"],
                                      attention_mask=enc["attention_mask"]).last_hidden_state
                loss = F.mse_loss(unet_output(unet, xt, t, hidden), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                lr_schedule.step()
                # EMA with warm-up: early averages do not drag in the random initialisation.
                _ema_update(ema, modules, min(cfg.ema_decay, (1 + step) / (10 + step)))
                running.append(loss.item())
                if (step + 1) % cfg.log_every == 0:
                    mean = sum(running) / len(running)
                    running = []
                    bar.set_postfix(loss=f"{mean:.4f}")
                    with log_path.open("a") as f:
                        f.write(f"{step + 1},{mean:.6f},{lr_schedule.get_last_lr()[0]:.3g},{time.time() - t0:.1f}\n")
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or stop.requested:
                    folder = run.checkpoint(f"checkpoint-{step + 1}", {**modules, "ema": ema}, optimizer, lr_schedule,
                                            state={"step": step + 1, "seconds": time.time() - t0})
                    save_sample_grid(ema_pipeline(pipe, ema), cfg.sample_prompts, folder / "samples.png")
                if stop.requested and step + 1 < cfg.steps:
                    raise run.interrupted(stop, f"after step {step + 1} of {cfg.steps}", folder)
        final = ema_pipeline(pipe, ema)
        final.save_pretrained(out / "pipeline")
        write_text_atomic(out / "pipeline" / "training.json",
                          json.dumps({"config": cfg.to_dict(), "steps": cfg.steps}, indent=1))
    finally:
        run.close()
    return out / "pipeline"


def _start_log(path: Path, start: int) -> None:
    """A fresh log for a fresh run; for a resumed one, the rows up to its checkpoint."""
    rows = path.read_text().splitlines()[1:] if start > 0 and path.exists() else []
    kept = [r for r in rows if r and int(r.split(",", 1)[0]) <= start]
    write_text_atomic(path, "\n".join(["step,loss,lr,seconds", *kept]) + "\n")
