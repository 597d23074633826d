"""Reward-gradient fine-tuning speed and peak memory: our DRaFT loop vs. trl's AlignPropTrainer, side by side.

Both train LoRA (rank 4 on the attention projections, as trl's default pipeline does) on the same small Stable
Diffusion-style pipeline (built by ``rl_throughput.py``'s script, so both benchmarks share it), with the same
settings: optimiser steps, images per step, denoising steps, eta, guidance, learning rate, and the reward's
gradient through the same last K denoising steps (trl: ``truncated_backprop_rand=False``,
``truncated_backprop_timestep = steps - K``; ours: ``truncation_steps = K``), both with gradient checkpointing,
and the same differentiable reward (mean brightness of the decoded image). trl 0.23.1 is the last release with
``AlignPropTrainer``; it runs in its own virtual environment (``.bench-venvs/trl``, made by ``rl_throughput.py``'s
helper). Each side runs in a fresh process; steps/s is optimiser steps over the wall time from loading the
pipeline to the end of training (median over alternating rounds); peak memory is the process's maximum resident
set size, its worker processes' included (with ``--device cuda``, peak allocated CUDA memory). Steady-state steps/s is
the median step after ``--warmup`` steps (what a long run sees). The last lines are the ratios (ours / trl).

    python benchmarks/draft_throughput.py [--steps 4] [--batch 4] [--denoising 10] [--k 2] [--repeats 3]
                                          [--warmup 3] [-o docs/benchmarks/draft_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rl_throughput import BUILD, ROOT, UNETS, ensure_trl_venv, run_side, torch_cuda_available  # noqa: E402

TRL_SIDE = r'''
import json, resource, sys, time, torch
args = json.loads(sys.argv[1])
torch.manual_seed(0)
from accelerate import PartialState
cpu = args["device"] == "cpu"
PartialState(cpu=cpu)
from trl import AlignPropConfig, AlignPropTrainer, DefaultDDPOStableDiffusionPipeline
prompts = ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]
counter = {"i": 0}
def prompt_fn():
    counter["i"] += 1
    return prompts[counter["i"] % len(prompts)], {}
def reward_fn(images, prompts_, metadata):
    return images.float().mean(dim=(1, 2, 3)), {}
config = AlignPropConfig(num_epochs=args["steps"], train_batch_size=args["batch"], train_gradient_accumulation_steps=1,
                         sample_num_steps=args["denoising"], sample_eta=0.0, sample_guidance_scale=args["guidance"],
                         train_learning_rate=args["lr"], truncated_backprop_rand=False,
                         truncated_backprop_timestep=args["denoising"] - args["k"], mixed_precision="no",
                         log_with=None, save_freq=10**6, allow_tf32=False, tracker_kwargs={},
                         project_kwargs={"project_dir": args["out"], "logging_dir": args["out"]},
                         accelerator_kwargs={"cpu": cpu})
t = time.perf_counter()  # from loading the pipeline to the end of training, as on our side
pipe = DefaultDDPOStableDiffusionPipeline(args["pipe"], use_lora=True)
trainer = AlignPropTrainer(config, reward_fn, prompt_fn, pipe)
ends, step = [], trainer.step
def timed_step(*a, **k):  # one call per optimiser step (an "epoch" of AlignPropConfig)
    out = step(*a, **k); ends.append(time.perf_counter()); return out
trainer.step = timed_step
trainer.train(); seconds = time.perf_counter() - t
print(json.dumps({"steps": args["steps"], "seconds": seconds, "step_seconds": [b - a for a, b in zip(ends, ends[1:])],
                  "peak_rss_mb": max(resource.getrusage(who).ru_maxrss for who in
                                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024,
                  "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}))
'''

OURS_SIDE = r'''
import json, resource, sys, time, torch
args = json.loads(sys.argv[1])
import accelerate, peft, transformers  # imported before the clock starts, as importing trl does on its side
from diffusers import StableDiffusionPipeline
import textnorm_t2i.finetune.draft as engine
from textnorm_t2i.trainers import DraftTrainer
def brightness(images, prompts):
    return images.float().mean(dim=(1, 2, 3))
starts, sample = [], engine.draft_sample
def timed_sample(*a, **k):  # one call per optimiser step (no gradient accumulation here)
    starts.append(time.perf_counter()); return sample(*a, **k)
engine.draft_sample = timed_sample
cfg = {"seed": 0, "generator": args["pipe"], "out": args["out"],
       "prompts": {"list": ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]},
       "sampling": {"steps": args["denoising"], "guidance_scale": args["guidance"], "eta": 0.0},
       "lora": {"rank": 4, "alpha": 4, "targets": ["to_k", "to_q", "to_v", "to_out.0"]},
       "steps": args["steps"], "batch_size": args["batch"], "truncation_steps": args["k"], "lr": args["lr"],
       "checkpoint_every": 10**6, "eval": {"every": 0}, "log": {"report_to": ["csv"]}}
t = time.perf_counter(); DraftTrainer(cfg, reward=brightness, progress=False).train(); seconds = time.perf_counter() - t
step_seconds = [b - a for a, b in zip(starts, starts[1:])]
print(json.dumps({"steps": args["steps"], "seconds": seconds, "step_seconds": step_seconds,
                  # any worker processes count too
                  "peak_rss_mb": max(resource.getrusage(who).ru_maxrss for who in
                                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024,
                  "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}))
'''


def steady_rate(run: dict, warmup: int) -> float:
    """Steps/s of a run's median step after ``warmup`` steps (its whole-run rate when it has too few steps)."""
    steps = run["step_seconds"][warmup:]
    return 1 / statistics.median(steps) if steps else run["steps"] / run["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=4, help="images per step")
    parser.add_argument("--denoising", type=int, default=10, help="denoising steps")
    parser.add_argument("--k", type=int, default=2, help="the reward's gradient flows through the last K steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of both sides; medians reported")
    parser.add_argument("--unet", choices=sorted(UNETS), default="embedded")
    parser.add_argument("--warmup", type=int, default=3,
                        help="steps left out of the steady-state rate (the first steps allocate and warm caches)")
    parser.add_argument("--without-trl", action="store_true",
                        help="our side only, no ratios (a smoke test that needs no trl environment)")
    parser.add_argument("-o", "--output", help="also write the results as JSON (docs/benchmarks/)")
    args = parser.parse_args()
    trl_python = sys.executable if args.without_trl else ensure_trl_venv()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch_cuda_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    sides = (["ours"] if args.without_trl else ["trl", "ours"])
    runs: dict[str, list] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(trl_python), "-c", BUILD, tmp, json.dumps(UNETS[args.unet])], check=True, env=env,
                       capture_output=True)
        common = {"pipe": str(Path(tmp) / "pipe"), "steps": args.steps, "batch": args.batch,
                  "denoising": args.denoising, "k": args.k, "guidance": 3.0, "lr": 1e-3, "device": args.device}
        for r in range(args.repeats):  # alternating, so that a slow spell of a shared machine hits both alike
            for side in sides:
                python, code = (str(trl_python), TRL_SIDE) if side == "trl" else (sys.executable, OURS_SIDE)
                runs[side].append(run_side(python, code, {**common, "out": str(Path(tmp) / f"{side}{r}")}, env))
            print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{s} {rs[-1]['seconds']:.1f} s"
                                                             for s, rs in runs.items()), flush=True)
    memory = "peak_cuda_mb" if args.device == "cuda" else "peak_rss_mb"
    rate = {s: statistics.median(r["steps"] / r["seconds"] for r in rs) for s, rs in runs.items()}
    # Steady state: the median step of each run after the warm-up steps, then the median over runs.
    steady = {s: statistics.median(steady_rate(r, args.warmup) for r in rs) for s, rs in runs.items()}
    peak = {s: max(r[memory] for r in rs) for s, rs in runs.items()}
    print(f"settings: {args.steps} steps x {args.batch} images, {args.denoising} denoising steps, gradient through the "
          f"last {args.k}, CFG 3.0, eta 0, LoRA r=4 on attention, gradient checkpointing, {args.threads} threads, "
          f"{args.device}, UNet {args.unet!r}; median of {args.repeats} alternating rounds, peak memory the largest")
    names = {"trl": "trl 0.23.1 AlignPropTrainer", "ours": "textnorm draft"}
    for side in sides:
        print(f"{names[side]:>28}: {rate[side]:.3f} steps/s from loading to the end, {steady[side]:.3f} steps/s "
              f"after {args.warmup} warm-up steps, peak memory {peak[side]:.0f} MB")
    if args.without_trl:
        return
    for side in sides[1:]:
        print(f"{names[side]} / trl: memory ratio {peak[side] / peak['trl']:.2f}, speed ratio "
              f"{rate[side] / rate['trl']:.2f} (whole run), {steady[side] / steady['trl']:.2f} (steady state)")
    print(f"memory ratio {peak['ours'] / peak['trl']:.2f}")
    print(f"speed ratio {rate['ours'] / rate['trl']:.2f}")
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, {
            "date": time.strftime("%Y-%m-%d"), "settings": vars(args) | {"output": None}, "memory": memory,
            "steps_per_second": rate, "steady_steps_per_second": steady, "peak_memory_mb": peak, "rounds": runs})


if __name__ == "__main__":
    main()
