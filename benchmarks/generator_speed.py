"""How fast the embedded generator runs on this machine, today's code path beside candidate faster ones, in one run.

Prints, measured side by side in this process (median of ``--repeats`` timed calls after warm-up):

- the machine's rates: a 2048 x 2048 float32 matmul and a 32-channel 3x3 convolution at 32 x 32 (batch 64), GFLOP/s;
- the UNet's inference forward (the batch sizes the code samples at) and its training forward + backward, in
  GFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) and as a share of the matmul rate, for each path:
  ``today`` (no_grad, contiguous NCHW), ``inference_mode``, ``channels_last`` (inference_mode, weights and inputs
  channels-last), ``compile`` (``torch.compile`` of the channels-last UNet; its compile time printed; with
  ``--compile``), and ``bf16`` (CPU autocast to bfloat16: an option where the CPU has native bf16, never a default:
  it changes the numbers beyond float rounding);
- images/s of 10-step guided sampling with the pipeline (``today`` vs ``channels_last``);
- the largest difference of each fp32 path's output from today's (float rounding only).

The last lines are the ratios (path / today). ``--output`` writes them as JSON (docs/benchmarks/).

    python benchmarks/generator_speed.py [--batches 16 64 256] [--train-batch 32] [--compile] [-o FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode

from textnorm_t2i.generate.load import load_generator
from textnorm_t2i.io import write_json_atomic


def seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def unet_inputs(batch: int, text_dim: int, channels_last: bool = False) -> tuple:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    cond = torch.randn(batch, 16, text_dim, generator=g)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return x, torch.full((batch,), 500), cond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--sample-images", type=int, default=64, help="images per sampling call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (about a minute to compile)")
    parser.add_argument("-o", "--output", help="write the results as JSON")
    args = parser.parse_args()
    torch.manual_seed(0)
    out: dict = {"threads": torch.get_num_threads(), "rates": {}, "inference": {}, "training": {}, "sampling": {},
                 "max_abs_diff": {}}

    a = torch.randn(2048, 2048)
    mm = 2 * 2048**3 / seconds(lambda: a @ a, args.repeats) / 1e9
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    xc = torch.randn(64, 32, 32, 32)
    with torch.inference_mode():
        conv_flops = flops(lambda: conv(xc))
        conv_rate = conv_flops / seconds(lambda: conv(xc), args.repeats) / 1e9
    out["rates"] = {"matmul_gflops": mm, "conv_gflops": conv_rate}
    print(f"machine: matmul {mm:.0f} GFLOP/s, conv 3x3 32ch {conv_rate:.0f} GFLOP/s, {out['threads']} threads",
          flush=True)

    pipe = load_generator("shapes")
    unet = pipe.unet.eval().requires_grad_(False)
    dim = unet.config.cross_attention_dim
    paths = ["today", "inference_mode", "channels_last", "bf16"] + (["compile"] if args.compile else [])
    compiled = None
    for batch in args.batches:
        x, t, c = unet_inputs(batch, dim)
        xl = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            n_flops = flops(partial(unet, x, t, encoder_hidden_states=c))
            reference = unet(x, t, encoder_hidden_states=c).sample
        row = {}
        for path in paths:
            unet.to(memory_format=torch.channels_last if path in ("channels_last", "compile") else
                    torch.contiguous_format)
            inp = xl if path in ("channels_last", "compile") else x
            model = unet
            if path == "compile":
                if compiled is None:
                    t0 = time.perf_counter()
                    compiled = torch.compile(unet, dynamic=False)
                    with torch.inference_mode():
                        compiled(inp, t, encoder_hidden_states=c)
                    out["compile_seconds"] = time.perf_counter() - t0
                    print(f"torch.compile: {out['compile_seconds']:.0f} s (first batch size)", flush=True)
                model = compiled
            grad_off = torch.no_grad() if path == "today" else torch.inference_mode()
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if path == "bf16" else nullcontext()
            with grad_off, cast:
                s = seconds(partial(model, inp, t, encoder_hidden_states=c), args.repeats)
                diff = float((model(inp, t, encoder_hidden_states=c).sample.float() - reference).abs().max())
            row[path] = n_flops / s / 1e9
            out["max_abs_diff"][f"{path}@{batch}"] = diff
        unet.to(memory_format=torch.contiguous_format)
        out["inference"][batch] = row
        print(f"inference forward, batch {batch} ({n_flops / batch / 1e9:.3f} GFLOP/image): "
              + ", ".join(f"{p} {v:.0f} GFLOP/s ({v / mm:.0%} of matmul)" for p, v in row.items()), flush=True)

    x, t, c = unet_inputs(args.train_batch, dim)
    unet.requires_grad_(True).train()

    def step(inp):
        unet.zero_grad(set_to_none=True)
        unet(inp, t, encoder_hidden_states=c).sample.square().mean().backward()

    n_flops = flops(lambda: step(x))
    for path in ("today", "channels_last"):
        unet.to(memory_format=torch.channels_last if path == "channels_last" else torch.contiguous_format)
        inp = x.contiguous(memory_format=torch.channels_last) if path == "channels_last" else x
        out["training"][path] = n_flops / seconds(partial(step, inp), args.repeats) / 1e9
    unet.requires_grad_(False).eval().to(memory_format=torch.contiguous_format)
    print(f"training forward+backward, batch {args.train_batch}: "
          + ", ".join(f"{p} {v:.0f} GFLOP/s ({v / mm:.0%})" for p, v in out["training"].items()), flush=True)

    prompts = ["two red circles", "a blue square to the left of a green triangle"] * (args.sample_images // 2)
    for path in ("today", "channels_last"):
        unet.to(memory_format=torch.channels_last if path == "channels_last" else torch.contiguous_format)
        s = seconds(lambda: pipe(prompts, num_inference_steps=10, output_type="pt"), max(1, args.repeats // 2))
        out["sampling"][path] = len(prompts) / s
    unet.to(memory_format=torch.contiguous_format)
    print("guided sampling (10 DDIM steps, guidance 3): "
          + ", ".join(f"{p} {v:.1f} images/s" for p, v in out["sampling"].items()), flush=True)

    print("largest |output - today's| (fp32 paths: float rounding): "
          + ", ".join(f"{k} {v:.1e}" for k, v in out["max_abs_diff"].items() if not k.startswith("bf16")))
    for batch, row in out["inference"].items():
        print(f"ratio inference@{batch}: " + ", ".join(f"{p} {v / row['today']:.2f}" for p, v in row.items()
                                                      if p != "today"))
    print(f"ratio training: channels_last {out['training']['channels_last'] / out['training']['today']:.2f}")
    print(f"ratio sampling: channels_last {out['sampling']['channels_last'] / out['sampling']['today']:.2f}")
    if args.output:
        write_json_atomic(args.output, {"date": time.strftime("%Y-%m-%d"), "settings": vars(args) | {"output": None},
                                        **out})


if __name__ == "__main__":
    main()
