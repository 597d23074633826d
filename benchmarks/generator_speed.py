"""How fast the embedded generator runs on this machine: today's code path beside the new one, in one run.

The two sides:

- ``today``: by default the package as it was when this work began (``--today aa5f05d``, the commit at which the
  generator-speed issue was filed, taken from this clone's git history with ``git archive``): its samplers and
  trainers, diffusers' own UNet forward, glibc's default allocator settings. ``--today reference`` is a stricter
  baseline: this tree's samplers and trainers with diffusers' UNet forward (``reference_forward``) and the default
  allocator, so that only the UNet forward and the allocator differ between the sides;
- ``new``: this tree, with the lean forward of :mod:`textnorm_t2i.generate.unet_forward` (same modules and
  weights) and :func:`textnorm_t2i.allocator.keep_freed_memory`, which the ``textnorm`` command calls at start.

Each side runs in a fresh process (the allocator setting is process-wide and cannot be undone), in alternating
rounds so that a slow spell of a shared machine hits both alike; each side's medians over rounds are reported, and
each ratio is the median over rounds of that round's new / today. Measured per
side, on the shipped generator:

- the UNet's inference forward at the batch sizes the code calls it with (16: DRaFT's 8 prompts with guidance;
  128: RL's 64 samples with guidance; 512: the pipeline's 256 prompts per call with guidance), in GFLOP/s (FLOPs
  counted by ``torch.utils.flop_counter``) and as a share of the machine's float32 matmul rate (2048 x 2048,
  measured in this run);
- its training forward + backward (per-sample timesteps, as SFT and base training) in GFLOP/s;
- images/s of 10-step guided sampling with the pipeline (256 prompts per call and 16);
- RL samples/s (the engine's own loop: 64 samples per epoch, stochastic DDIM, 32 per minibatch; steady state
  after the first epoch);
- reward-gradient (DRaFT) steps/s (8 images per step, gradient through the last 2 of 10 steps with
  checkpointing; steady state after 2 steps);
- the largest difference of the new path's UNet output from today's (float rounding), and, as an option only,
  the new path under bf16 autocast (its speed and its difference: not float rounding, never a default).

The last lines are the ratios (new / today).

    python benchmarks/generator_speed.py [--today aa5f05d | --today reference] [--rounds 5] [--batches 16 128 512]
                                         [-o docs/benchmarks/generator_speed.json]
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
from contextlib import nullcontext
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILED = "aa5f05d"  # the commit at which the generator-speed issue was filed: "today's code" of its targets


def refuse(message: str) -> None:
    """One line on stderr, exit code 2: before any measurement (a run takes about an hour)."""
    print(f"generator_speed: {message}", file=sys.stderr)
    raise SystemExit(2)


def code_at(revision: str, into: Path) -> Path:
    """The package's ``src`` folder as of ``revision`` of this clone, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision, "src"],
                             capture_output=True)
    if archive.returncode != 0:
        why = archive.stderr.decode(errors="replace").strip().splitlines() or ["git failed"]
        refuse(f"cannot read revision {revision!r} from the git history of {ROOT} ({why[0]}); "
               "use --today reference on a clone without it")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def seconds(fn, repeats: int, warmup: int = 2, min_seconds: float = 1.0) -> float:
    """Median wall time of ``fn()`` over at least ``repeats`` calls and ``min_seconds`` of calls, after ``warmup``
    calls (a fixed count of 30 ms calls would leave the median to a moment's noise of a shared machine)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_rates(repeats: int, min_seconds: float = 1.0) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    a = torch.randn(2048, 2048)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    xc = torch.randn(64, 32, 32, 32)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        conv(xc)
    with torch.inference_mode():
        return {"matmul_gflops": 2 * 2048**3 / seconds(lambda: a @ a, repeats, min_seconds=min_seconds) / 1e9,
                "conv_gflops": counter.get_total_flops() / seconds(lambda: conv(xc), repeats,
                                                                   min_seconds=min_seconds) / 1e9}


def side(name: str, args: argparse.Namespace) -> dict:
    """Everything measured for one side, in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from textnorm_t2i.generate.load import load_generator

    try:
        from textnorm_t2i.generate.unet_forward import reference_forward, unet_output
    except ImportError:  # an older revision's package (--today REV): every caller ran diffusers' forward
        reference_forward = nullcontext

        def unet_output(unet, x, t, c):
            return unet(x, t, encoder_hidden_states=c).sample

    if name == "new":
        from textnorm_t2i.allocator import keep_freed_memory

        keep_freed_memory()
    path = reference_forward if name == "today" else nullcontext
    out: dict = {"inference": {}, "max_abs_diff": {}}
    pipe = load_generator("shapes")
    unet = pipe.unet.eval().requires_grad_(False)
    dim = unet.config.cross_attention_dim
    with path():
        for batch in args.batches:
            g = torch.Generator().manual_seed(batch)
            x, c = torch.randn(batch, 3, 32, 32, generator=g), torch.randn(batch, 16, dim, generator=g)
            t = torch.tensor(500)
            with torch.inference_mode():
                with reference_forward(), FlopCounterMode(display=False) as counter:
                    reference = unet_output(unet, x, t, c)
                n_flops = counter.get_total_flops()
                s = seconds(partial(unet_output, unet, x, t, c), args.repeats, min_seconds=args.min_seconds)
                out["inference"][str(batch)] = n_flops / s / 1e9
                out["max_abs_diff"][str(batch)] = float((unet_output(unet, x, t, c) - reference).abs().max())
                if name == "new" and batch == max(args.batches):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        out["bf16_option"] = n_flops / seconds(partial(unet_output, unet, x, t, c), args.repeats,
                                                               min_seconds=args.min_seconds) / 1e9
                        out["bf16_max_abs_diff"] = float((unet_output(unet, x, t, c).float() - reference).abs().max())
        print(f"  {name}: inference done", file=sys.stderr, flush=True)

        g = torch.Generator().manual_seed(0)
        batch = args.train_batch
        x, c = torch.randn(batch, 3, 32, 32, generator=g), torch.randn(batch, 16, dim, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        unet.requires_grad_(True).train()

        def step():
            unet.zero_grad(set_to_none=True)
            unet_output(unet, x, t, c).square().mean().backward()

        with reference_forward(), FlopCounterMode(display=False) as counter:
            step()
        out["training"] = counter.get_total_flops() / seconds(step, args.repeats, min_seconds=args.min_seconds) / 1e9
        unet.requires_grad_(False).eval()

        out["sampling"] = {}
        for n in args.sample_prompts:
            prompts = ["two red circles", "a blue square to the left of a green triangle"] * (n // 2)
            s = seconds(partial(pipe, prompts, num_inference_steps=10, output_type="pt"), 2, warmup=1,
                        min_seconds=2 * args.min_seconds)
            out["sampling"][str(n)] = len(prompts) / s
        print(f"  {name}: training and sampling done", file=sys.stderr, flush=True)
        out["rl_samples_per_second"] = rl_rate(args)
        out["draft_steps_per_second"] = draft_rate(args)
    return out


def rl_rate(args: argparse.Namespace) -> float:
    """Steady-state samples/s of the RL engine (epochs after the first)."""
    import textnorm_t2i.finetune.rl as engine
    from textnorm_t2i.rewards.base import CallableReward
    from textnorm_t2i.rewards.registry import register_reward

    register_reward("bench-brightness", "mean pixel value")(
        lambda path_or_id=None, **kw: CallableReward(lambda images, p: images.float().mean(dim=(1, 2, 3)),
                                                     name="brightness"))
    starts, sample = [], engine.sample_trajectories

    def timed(*a, **k):
        starts.append(time.perf_counter())
        return sample(*a, **k)

    engine.sample_trajectories = timed
    batch = args.rl_batch
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"seed": 0, "generator": "shapes", "out": str(Path(tmp) / "rl"),
               "prompts": {"list": ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]},
               "reward": {"name": "bench-brightness", "textnorm": False},
               "sampling": {"steps": 10, "guidance_scale": 3.0, "eta": 1.0},
               "epochs": args.rl_epochs, "batch_size": batch, "train_batch_size": min(32, batch), "lr": 3e-4,
               "checkpoint_every": 10**6, "eval": {"every": 0}, "log": {"report_to": ["csv"]}}
        engine.run_rl(cfg, progress=False)
        end = time.perf_counter()
    engine.sample_trajectories = sample
    epochs = [b - a for a, b in zip(starts, starts[1:] + [end])][1:]
    return batch / statistics.median(epochs)


def draft_rate(args: argparse.Namespace) -> float:
    """Steady-state optimiser steps/s of the DRaFT engine (steps after the first two)."""
    import textnorm_t2i.finetune.draft as engine
    from textnorm_t2i.trainers import DraftTrainer

    starts, sample = [], engine.draft_sample

    def timed(*a, **k):
        starts.append(time.perf_counter())
        return sample(*a, **k)

    engine.draft_sample = timed
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"seed": 0, "generator": "shapes", "out": str(Path(tmp) / "draft"),
               "prompts": {"list": ["a red circle", "two blue squares", "a green triangle", "three yellow circles"]},
               "sampling": {"steps": 10, "guidance_scale": 3.0, "eta": 0.0},
               "steps": args.draft_steps, "batch_size": 8, "truncation_steps": 2, "lr": 1e-3,
               "checkpoint_every": 10**6, "eval": {"every": 0}, "log": {"report_to": ["csv"]}}
        DraftTrainer(cfg, reward=lambda images, prompts: images.float().mean(dim=(1, 2, 3)), progress=False).train()
        end = time.perf_counter()
    engine.draft_sample = sample
    steps = [b - a for a, b in zip(starts, starts[1:] + [end])][2:]
    return 1 / statistics.median(steps)


def round_ratios(today: dict, new: dict) -> dict[str, float]:
    """new / today for each headline measure of one round."""
    ratios = {f"inference@{b}": new["inference"][b] / today["inference"][b] for b in today["inference"]}
    ratios["training"] = new["training"] / today["training"]
    ratios.update({f"sampling@{n}": new["sampling"][n] / today["sampling"][n] for n in today["sampling"]})
    ratios["rl"] = new["rl_samples_per_second"] / today["rl_samples_per_second"]
    ratios["draft"] = new["draft_steps_per_second"] / today["draft_steps_per_second"]
    return ratios


def median_of(runs: list[dict]) -> dict:
    """Leaf-wise median of the rounds' results."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first}
    return statistics.median(runs)


def check_settings(args: argparse.Namespace) -> None:
    """Settings the measurement cannot run with, refused up front rather than as a traceback minutes later."""
    at_least = {"--batches": (min(args.batches), 1), "--train-batch": (args.train_batch, 1),
                "--rl-epochs": (args.rl_epochs, 2), "--rl-batch": (args.rl_batch, 1),
                "--draft-steps": (args.draft_steps, 3), "--repeats": (args.repeats, 1), "--rounds": (args.rounds, 1),
                "--threads": (args.threads, 1)}
    for flag, (value, lo) in at_least.items():
        if value < lo:  # RL's and DRaFT's rates are steady-state: the first epoch, the first two steps are left out
            refuse(f"{flag} must be at least {lo}, got {value}")
    if any(n < 2 or n % 2 for n in args.sample_prompts):
        refuse(f"--sample-prompts must be even numbers of at least 2 (two prompts alternate), "
               f"got {args.sample_prompts}")
    if args.rl_batch > 32 and args.rl_batch % 32:
        refuse(f"--rl-batch above 32 must be a multiple of 32 (RL's minibatch), got {args.rl_batch}")
    if not 0 <= args.min_seconds < float("inf"):
        refuse(f"--min-seconds must be a finite number of at least 0, got {args.min_seconds}")
    if args.output:
        from textnorm_t2i.errors import InputError
        from textnorm_t2i.io import check_writable

        try:
            check_writable(args.output)
        except InputError as e:
            refuse(str(e))


def main() -> None:
    from textnorm_t2i.cli.common import Parser  # argparse with one-line errors, as the textnorm command has

    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 128, 512], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--sample-prompts", type=int, nargs="+", default=[256, 16], help="prompts per sampling call")
    parser.add_argument("--rl-epochs", type=int, default=4)
    parser.add_argument("--rl-batch", type=int, default=64, help="RL samples per epoch (the study's)")
    parser.add_argument("--draft-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per UNet measurement")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="each timing runs at least this long (and at least --repeats calls)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of both sides; medians reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--today", default=FILED,
                        help="today's side: a git revision of this clone (default: the issue's filing) or "
                        "'reference' (this tree with diffusers' UNet forward and the default allocator)")
    parser.add_argument("--side", choices=["today", "new"], help=argparse.SUPPRESS)  # a side's own process
    parser.add_argument("-o", "--output", help="write the results as JSON (docs/benchmarks/)")
    args = parser.parse_args()
    check_settings(args)
    if args.side:
        print(json.dumps(side(args.side, args)))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    passed = [a for a in sys.argv[1:] if a not in ("-o", "--output", args.output)]
    old_code = tempfile.TemporaryDirectory()
    envs = {"today": env, "new": env}
    if args.today != "reference":
        envs["today"] = dict(env, PYTHONPATH=str(code_at(args.today, Path(old_code.name))))
    runs: dict[str, list] = {"today": [], "new": []}
    rates = []
    for r in range(args.rounds):
        for name in ("today", "new"):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, *passed, "--side", name], env=envs[name], check=True,
                                  stdout=subprocess.PIPE, text=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds}: {name} {time.perf_counter() - t0:.0f} s", flush=True)
        probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import generator_speed as g; "
                 "print(json.dumps(g.machine_rates(5, float(sys.argv[2]))))")
        rates.append(subprocess.run([sys.executable, "-c", probe, str(Path(__file__).parent), str(args.min_seconds)],
                                    env=env, check=True, stdout=subprocess.PIPE, text=True).stdout)
    old_code.cleanup()
    machine = median_of([json.loads(r) for r in rates])
    result = {"today": median_of(runs["today"]), "new": median_of(runs["new"])}
    today, new = result["today"], result["new"]
    mm = machine["matmul_gflops"]
    print(f"machine: matmul {mm:.0f} GFLOP/s, conv 3x3 32ch {machine['conv_gflops']:.0f} GFLOP/s, "
          f"{args.threads} threads; medians of {args.rounds} alternating rounds; today = "
          + ("this tree with diffusers' UNet forward" if args.today == "reference" else f"the code at {args.today}"))
    for b in today["inference"]:
        print(f"UNet inference forward, batch {b}: today {today['inference'][b]:.0f} GFLOP/s "
              f"({today['inference'][b] / mm:.0%} of matmul), new {new['inference'][b]:.0f} GFLOP/s "
              f"({new['inference'][b] / mm:.0%})")
    print(f"UNet training forward+backward, batch {args.train_batch}: today {today['training']:.0f} GFLOP/s, "
          f"new {new['training']:.0f} GFLOP/s")
    for n in today["sampling"]:
        print(f"guided sampling, {n} prompts per call (10 steps): today {today['sampling'][n]:.1f} images/s, "
              f"new {new['sampling'][n]:.1f} images/s")
    print(f"RL: today {today['rl_samples_per_second']:.2f} samples/s, new {new['rl_samples_per_second']:.2f}")
    print(f"DRaFT: today {today['draft_steps_per_second']:.2f} steps/s, new {new['draft_steps_per_second']:.2f}")
    print("largest |new - today| of the UNet output (float rounding): "
          + ", ".join(f"batch {b} {v:.1e}" for b, v in new["max_abs_diff"].items()))
    print(f"option only: bf16 autocast at batch {max(args.batches)}: {new['bf16_option']:.0f} GFLOP/s, "
          f"largest difference {new['bf16_max_abs_diff']:.2f} (not float rounding)")
    # Each ratio is the median over rounds of that round's new / today: the two sides of a round run minutes
    # apart, so a slow spell of a shared machine that spans a round moves both.
    per_round = [round_ratios(t, n) for t, n in zip(runs["today"], runs["new"])]
    ratios = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    print("ratios new / today (median over rounds of each round's ratio): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    sampling_batch = str(2 * max(args.sample_prompts))
    if sampling_batch in new["inference"]:
        print(f"new UNet inference at the sampling batch ({sampling_batch}): "
              f"{new['inference'][sampling_batch] / mm:.0%} of the matmul rate")
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, {"date": time.strftime("%Y-%m-%d"), "settings": vars(args) | {"output": None},
                                        "machine": machine, **result, "ratios": ratios, "rounds": runs})


if __name__ == "__main__":
    main()
