"""RL throughput and peak memory: our DDPO loop vs. trl's DDPOTrainer, side by side in one run.

Both train LoRA (rank 4 on the attention projections, as trl's default pipeline does) on the same
small Stable Diffusion-style pipeline, with the same settings: epochs, samples per epoch, train
batch size, denoising steps, eta, guidance, learning rate, clip range, and the same reward (mean
brightness). trl is the last release that ships ``DDPOTrainer`` (0.23.1); it is installed by this
script in its own virtual environment (``.bench-venvs/trl``) with torch 2.13.0, transformers < 4.57,
diffusers < 0.36, peft and accelerate. Each side runs in a fresh process; throughput counts the
samples trained on divided by the wall time (median over alternating rounds), peak memory is the
process's maximum resident set size (largest over the rounds; with ``--device cuda``, the peak
allocated CUDA memory). The clock runs from loading the pipeline to the end of training on both
sides (imports excluded on both). The last line is ``throughput ratio X.XX`` (ours / trl).

    python benchmarks/rl_throughput.py [--epochs 4] [--batch 8] [--steps 10] [--repeats 3]
                                       [--unet embedded|attention] [--device cpu|cuda]

Our loop also runs with several denoising steps per UNet call in training (``timesteps_per_pass``:
the same loss and gradient, fewer and larger calls, more activation memory); each setting is printed.
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

ROOT = Path(__file__).resolve().parent.parent
TRL_VENV = ROOT / ".bench-venvs" / "trl"
TRL_REQUIREMENTS = ["torch==2.13.0", "trl==0.23.1", "transformers<4.57", "diffusers<0.36", "peft", "accelerate"]

# Runs inside either environment: builds the shared tiny pipeline with that environment's libraries.
BUILD = r'''
import json, sys, torch
from pathlib import Path
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
# A byte-level CLIP vocabulary without merges: every character is a token.
chars = [chr(c) for c in range(33, 127)]
vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars])}
(out / "vocab.json").write_text(json.dumps(vocab)); (out / "merges.txt").write_text("#version: 0.2\n")
tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=32)
torch.manual_seed(0)
unet = UNet2DConditionModel(in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=32,
                            attention_head_dim=8, norm_num_groups=8, **json.loads(sys.argv[2]))
vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=32)
text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, max_position_embeddings=32, pad_token_id=1,
                                    bos_token_id=0, eos_token_id=1))
sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                        feature_extractor=None, requires_safety_checker=False).save_pretrained(out / "pipe",
                                                                                               safe_serialization=True)
'''

# The UNet: "embedded" has the embedded generator's shape (channels 16/32/64, cross-attention only at
# the lowest resolution); "attention" puts attention with 8 heads of 4 channels at full latent resolution,
# where CPU attention kernels dominate the time.
UNETS = {
    "embedded": {"sample_size": 32, "block_out_channels": [16, 32, 64],
                 "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]},
    "attention": {"sample_size": 16, "block_out_channels": [32, 64],
                  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]},
}

TRL_SIDE = r'''
import json, resource, sys, time, torch
args = json.loads(sys.argv[1])
torch.manual_seed(0)
from accelerate import PartialState
cpu = args["device"] == "cpu"
PartialState(cpu=cpu)  # trl's pipeline wants the accelerate state before it is built
from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline
prompts = ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]
counter = {"i": 0}
def prompt_fn():
    counter["i"] += 1
    return prompts[counter["i"] % len(prompts)], {}
def reward_fn(images, prompts_, metadata):
    return images.float().mean(dim=(1, 2, 3)), {}
config = DDPOConfig(num_epochs=args["epochs"], sample_batch_size=args["batch"], sample_num_batches_per_epoch=1,
                    train_batch_size=args["train_batch"], train_gradient_accumulation_steps=1,
                    sample_num_steps=args["steps"], sample_eta=1.0, sample_guidance_scale=args["guidance"],
                    train_learning_rate=args["lr"], train_clip_range=1e-4, train_adv_clip_max=5.0,
                    train_timestep_fraction=1.0, per_prompt_stat_tracking=False, mixed_precision="no",
                    log_with=None, save_freq=10**6, allow_tf32=False, async_reward_computation=False,
                    project_kwargs={"project_dir": args["out"], "logging_dir": args["out"]},
                    accelerator_kwargs={"cpu": cpu})
t = time.perf_counter()  # from loading the pipeline to the end of training, as on our side
pipe = DefaultDDPOStableDiffusionPipeline(args["pipe"], use_lora=True)
trainer = DDPOTrainer(config, reward_fn, prompt_fn, pipe)
trainer.train(); seconds = time.perf_counter() - t
print(json.dumps({"samples": args["epochs"] * args["batch"], "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}))
'''

OURS_SIDE = r'''
import json, resource, sys, time, torch
args = json.loads(sys.argv[1])
# Imported before the clock starts, as importing trl does on its side.
import accelerate, peft, transformers
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from textnorm_t2i.finetune.rl import run_rl
from textnorm_t2i.rewards.base import CallableReward
from textnorm_t2i.rewards.registry import register_reward
register_reward("bench-brightness", "mean pixel value")(
    lambda path_or_id=None, **kw: CallableReward(lambda images, p: images.float().mean(dim=(1, 2, 3)),
                                                 name="brightness"))
cfg = {"seed": 0, "generator": args["pipe"], "out": args["out"],
       "prompts": {"list": ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]},
       "reward": {"name": "bench-brightness", "textnorm": False},
       "sampling": {"steps": args["steps"], "guidance_scale": args["guidance"], "eta": 1.0},
       "lora": {"rank": 4, "alpha": 4, "targets": ["to_k", "to_q", "to_v", "to_out.0"]},
       "epochs": args["epochs"], "batch_size": args["batch"], "train_batch_size": args["train_batch"],
       "lr": args["lr"], "clip_range": 1e-4, "checkpoint_every": 10**6, "eval": {"every": 0},
       "log": {"report_to": ["csv"]}, "timesteps_per_pass": args["timesteps_per_pass"]}
t = time.perf_counter(); run_rl(cfg, progress=False); seconds = time.perf_counter() - t
print(json.dumps({"samples": args["epochs"] * args["batch"], "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}))
'''


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    probe = [str(python), "-c", "import trl, diffusers; from trl import DDPOTrainer"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {' '.join(TRL_REQUIREMENTS)} into {TRL_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(TRL_VENV / "bin" / "pip"), "install", *TRL_REQUIREMENTS], check=True)
    return python


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_side(python: str, code: str, args: dict, env: dict) -> dict:
    result = subprocess.run([python, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"benchmark side failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="samples per epoch")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="denoising steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: both sides on the GPU, peak memory is peak allocated CUDA memory")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of all sides; medians are reported")
    parser.add_argument("--unet", choices=sorted(UNETS), default="embedded")
    parser.add_argument("--timesteps-per-pass", type=int, default=1,
                        help="our setting for the last lines (1 = the engine's default, one denoising step per call)")
    parser.add_argument("--also", type=int, nargs="*", default=[2, 5], help="further timesteps_per_pass values to run")
    parser.add_argument("-o", "--output", help="also write the results as JSON (docs/benchmarks/, quoted by the docs)")
    parser.add_argument("--without-trl", action="store_true",
                        help="our side only, no ratios (a smoke test that needs no trl environment)")
    args = parser.parse_args()
    trl_python = sys.executable if args.without_trl else ensure_trl_venv()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # both sides on the CPU even where a GPU is present
    elif not torch_cuda_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    ks = sorted({args.timesteps_per_pass, *args.also})
    runs: dict = {**({} if args.without_trl else {"trl": []}), **{k: [] for k in ks}}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(trl_python), "-c", BUILD, tmp, json.dumps(UNETS[args.unet])], check=True, env=env,
                       capture_output=True)
        common = {"pipe": str(Path(tmp) / "pipe"), "epochs": args.epochs, "batch": args.batch,
                  "train_batch": args.train_batch, "steps": args.steps, "guidance": 3.0, "lr": 3e-4,
                  "device": args.device}
        # Rounds alternate the sides, so that a slow spell of this shared machine hits them alike.
        for r in range(args.repeats):
            if not args.without_trl:
                runs["trl"].append(run_side(str(trl_python), TRL_SIDE, {**common, "out": str(Path(tmp) / f"trl{r}")},
                                            env))
            for k in ks:
                runs[k].append(run_side(sys.executable, OURS_SIDE, {**common, "out": str(Path(tmp) / f"ours{k}-{r}"),
                                                                    "timesteps_per_pass": k}, env))
            times = [f"{'trl' if side == 'trl' else f'ours k={side}'} {rs[-1]['seconds']:.1f} s"
                     for side, rs in runs.items()]
            print(f"round {r + 1}/{args.repeats}: {', '.join(times)}", flush=True)
    print(f"settings: {args.epochs} epochs x {args.batch} samples, train batch {args.train_batch}, "
          f"{args.steps} denoising steps, CFG 3.0, LoRA r=4 on attention, {args.threads} threads, {args.device}, "
          f"UNet {args.unet!r}; "
          f"median of {args.repeats} alternating rounds, peak memory the largest")
    rate = {side: statistics.median(r["samples"] / r["seconds"] for r in rs) for side, rs in runs.items()}
    # On a GPU the memory that matters is the accelerator's: peak allocated CUDA memory.
    memory = "peak_cuda_mb" if args.device == "cuda" else "peak_rss_mb"
    peak = {side: max(r[memory] for r in rs) for side, rs in runs.items()}
    if args.without_trl:
        for k in ks:
            print(f"{f'textnorm, timesteps_per_pass={k}':>34}: {rate[k]:.2f} samples/s, peak memory {peak[k]:.0f} MB")
        return
    print(f"{'trl 0.23.1 DDPOTrainer':>34}: {rate['trl']:.2f} samples/s, peak memory {peak['trl']:.0f} MB")
    for k in ks:
        print(f"{f'textnorm, timesteps_per_pass={k}':>34}: {rate[k]:.2f} samples/s, peak memory {peak[k]:.0f} MB; "
              f"vs trl: throughput x{rate[k] / rate['trl']:.2f}, memory x{peak[k] / peak['trl']:.2f}")
    k = args.timesteps_per_pass
    print(f"memory ratio {peak[k] / peak['trl']:.2f} (timesteps_per_pass={k})")
    print(f"throughput ratio {rate[k] / rate['trl']:.2f}")
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, {
            "date": time.strftime("%Y-%m-%d"), "settings": vars(args) | {"output": None}, "memory": memory,
            "samples_per_second": {str(side): v for side, v in rate.items()},
            "peak_memory_mb": {str(side): v for side, v in peak.items()},
            "rounds": {str(side): rs for side, rs in runs.items()}})


if __name__ == "__main__":
    main()
