"""``textnorm world``: the embedded synthetic world (render, judge, prompts, TIA2-Shapes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from textnorm_t2i.cli.common import add_group, add_output, check_output, emit, int_in
from textnorm_t2i.errors import InputError


def cmd_world_render(args: argparse.Namespace) -> int:
    from textnorm_t2i.world.scene import render

    if not args.output.lower().endswith(".png"):
        raise InputError(f"{args.output}: the output must be a .png file")
    check_output(args.output)
    img = render(args.prompt, seed=args.seed, size=args.size)
    from textnorm_t2i.io import atomic_write

    with atomic_write(args.output, "wb") as f:
        img.save(f, format="PNG")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_world_judge(args: argparse.Namespace) -> int:
    from textnorm_t2i.io import open_image
    from textnorm_t2i.world.grammar import parse
    from textnorm_t2i.world.oracle import judge

    spec = parse(args.prompt)
    results = [{"image": str(path), **judge(open_image(Path(path)), spec).to_dict()} for path in args.images]
    # --exit-code: 1 when any image is not aligned (for shell scripts), as `git diff --exit-code` does.
    status = 1 if args.exit_code and not all(v["aligned"] for v in results) else 0
    if args.json:
        # One image: its verdict object; several: a list of them, in the order given.
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return status
    for v in results:
        print(f"{v['image']}: {'ALIGNED' if v['aligned'] else 'NOT ALIGNED'} - {'; '.join(v['reasons'])}")
    return status


def cmd_world_prompts(args: argparse.Namespace) -> int:
    from textnorm_t2i.world.grammar import sample_prompts

    for p in sample_prompts(args.subset, args.n, args.seed):
        print(p)
    return 0


def cmd_world_benchmark_build(args: argparse.Namespace) -> int:
    from textnorm_t2i.analysis.benchmark import build_shapes_benchmark

    out = build_shapes_benchmark(args.output, args.prompts_per_subset, args.samples, args.seed, args.model,
                                 args.steps, overwrite=args.overwrite)
    print(f"TIA2-Shapes written to {out}", file=sys.stderr)
    return 0


def cmd_world_benchmark_table(args: argparse.Namespace) -> int:
    from textnorm_t2i.analysis.misalignment import EMBEDDED_REWARDS, misalignment_text

    check_output(args.output)
    text = misalignment_text(args.benchmark, args.reward or EMBEDDED_REWARDS, k=args.k, oracle=args.oracle,
                             fmt=args.format, as_json=args.json)
    emit(text, args.output)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``world render | judge | prompts | benchmark build | benchmark table``."""
    wsub = add_group(sub, "world", "the embedded synthetic world")
    wr = wsub.add_parser("render", help="draw a random scene that satisfies a prompt")
    wr.add_argument("--prompt", required=True)
    wr.add_argument("--seed", type=int, default=0, help="scene seed")
    wr.add_argument("--size", type=int_in(32, 2048), default=32, help="canvas size in pixels (square)")
    wr.add_argument("-o", "--output", required=True, metavar="IMG.png")
    wr.set_defaults(func=cmd_world_render)
    wj = wsub.add_parser("judge", help="the oracle's verdict on images for a prompt")
    wj.add_argument("--prompt", required=True)
    wj.add_argument("images", nargs="+", metavar="IMG")
    wj.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    wj.add_argument("--exit-code", action="store_true", help="exit with 1 when an image is not aligned")
    wj.set_defaults(func=cmd_world_judge)
    wp = wsub.add_parser("prompts", help="sample prompts of a subset")
    wp.add_argument("--subset", required=True, choices=("counting", "composition", "comprehensive"))
    wp.add_argument("--n", type=int_in(1, 100_000), default=10, help="how many prompts")
    wp.add_argument("--seed", type=int, default=0, help="sampling seed")
    wp.set_defaults(func=cmd_world_prompts)

    wbsub = add_group(wsub, "benchmark", "TIA2-Shapes: build it, or print its misalignment table")
    wbb = wbsub.add_parser("build", help="build TIA2-Shapes from the embedded generator")
    wbb.add_argument("-o", "--output", required=True, metavar="DIR")
    wbb.add_argument("--prompts-per-subset", type=int_in(1, 10_000), default=40, help="prompts per subset")
    wbb.add_argument("--samples", type=int_in(2, 10_000), default=50, help="generated images per prompt")
    wbb.add_argument("--seed", type=int, default=0, help="seed of prompts, images and annotators")
    wbb.add_argument("--steps", type=int_in(1, 1000), default=20, help="DDIM steps")
    wbb.add_argument("--model", default="shapes", help="generator: 'shapes' (shipped) or a pipeline folder")
    wbb.add_argument("--overwrite", action="store_true", help="replace an earlier benchmark build in DIR")
    wbb.set_defaults(func=cmd_world_benchmark_build)
    wbt = wbsub.add_parser("table", help="proxy rewards, TextNorm (CV) and ensembles on a benchmark")
    wbt.add_argument("--benchmark", default="shapes")
    wbt.add_argument("--reward", action="append", help="reward name (repeatable; default the embedded ones)")
    wbt.add_argument("--k", type=int_in(2, 1000), default=5, help="cross-validation folds over prompts")
    wbt.add_argument("--oracle", action="store_true", help="also TextNorm with the per-prompt temperature chosen "
                     "with that prompt's labels (labelled ORACLE)")
    add_output(wbt)
    wbt.set_defaults(func=cmd_world_benchmark_table)

