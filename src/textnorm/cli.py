"""The ``textnorm`` command.

Each sub-command is a small function ``cmd_*`` taking parsed arguments; bad input raises
:class:`~textnorm.errors.InputError`, which becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from textnorm.errors import InputError

PUBLISHED_NOTE = (
    "Published rows from the authors' per-prompt scores (kykim0/TextNorm). Note: their textnorm_* rows "
    "chose the temperature/lambda per prompt using that prompt's human labels (an oracle choice)."
)


def _emit(text: str, output: str | None) -> None:
    """Print ``text``; with ``-o`` also write it atomically to the file."""
    from textnorm.io import write_text_atomic

    if output:
        write_text_atomic(output, text)
    sys.stdout.write(text)


# ----------------------------------------------------------------------------------------- tia2
def cmd_tia2_info(args: argparse.Namespace) -> int:
    from textnorm.bench.tia2 import load_benchmark

    info = {}
    for name, subset in load_benchmark(args.benchmark).items():
        info[name] = {
            "prompts": len(subset.prompts),
            "images": len(subset.images),
            "evaluated_prompts": len(subset.evaluated_prompts),
            "aligned_fraction": float(subset.aligned.mean()),
            "prompt_sets": len(subset.prompt_sets),
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{'subset':<15}{'prompts':>9}{'images':>9}{'evaluated':>11}{'aligned':>9}{'sets':>7}")
    for name, row in info.items():
        print(f"{name:<15}{row['prompts']:>9}{row['images']:>9}{row['evaluated_prompts']:>11}"
              f"{row['aligned_fraction']:>9.3f}{row['prompt_sets']:>7}")
    return 0


def cmd_tia2_table(args: argparse.Namespace) -> int:
    from textnorm.bench.evaluate import published_table
    from textnorm.bench.report import render
    from textnorm.bench.tia2 import load_benchmark

    if not args.published:
        raise InputError("tia2 table: pass --published (to score your own model, use `textnorm tia2 eval`)")
    results = {name: published_table(s) for name, s in load_benchmark(args.benchmark, args.subset).items()}
    text = render(results, args.format, args.json, title="TIA2: published per-prompt alignment (mean over prompts)",
                  note=PUBLISHED_NOTE)
    _emit(text, args.output)
    return 0


def cmd_tia2_eval(args: argparse.Namespace) -> int:
    from textnorm.bench.evaluate import evaluate_subset
    from textnorm.bench.report import render
    from textnorm.bench.scores_file import read_scores

    scores, subsets = read_scores(args.scores, args.benchmark)
    results: dict = {}
    notes = []
    for name, models in scores.items():
        results[name] = {}
        for model, by_image in models.items():
            res = evaluate_subset(subsets[name], by_image, allow_missing=args.allow_missing)
            results[name][model] = res.summary()
            if res.dropped_images or res.dropped_prompts:
                notes.append(f"{name}/{model}: dropped {len(res.dropped_images)} image(s) without a score and "
                             f"{len(res.dropped_prompts)} prompt(s) left with one class")
    for n in notes:
        print(f"textnorm: note: {n}", file=sys.stderr)
    _emit(render(results, args.format, args.json, title=f"Alignment of {args.scores}"), args.output)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: currently the published TIA2 table."""
    ns = argparse.Namespace(published=True, benchmark=None, subset=None, format="table", json=False, output=None)
    return cmd_tia2_table(ns)


# ------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textnorm", description="Confidence-aware reward optimization toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on the embedded default")
    demo.set_defaults(func=cmd_demo)

    tia2 = sub.add_parser("tia2", help="TIA2 benchmark: info, published table, evaluate your scores")
    tsub = tia2.add_subparsers(dest="tia2_command", required=True)

    def add_benchmark(p: argparse.ArgumentParser) -> None:
        p.add_argument("--benchmark", metavar="DIR", default=None,
                       help="benchmark folder laid out like TIA2 (default: the shipped TIA2 annotations)")

    def add_output(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
        p.add_argument("-o", "--output", metavar="OUT", help="also write the output to this file (atomically)")

    info = tsub.add_parser("info", help="prompts, images, evaluated prompts and aligned fraction per subset")
    add_benchmark(info)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_tia2_info)

    table = tsub.add_parser("table", help="the paper's table from the published per-prompt scores")
    table.add_argument("--published", action="store_true", help="use the published per-prompt scores")
    table.add_argument("--subset", action="append", help="restrict to this subset (repeatable)")
    add_benchmark(table)
    add_output(table)
    table.set_defaults(func=cmd_tia2_table)

    ev = tsub.add_parser("eval", help="evaluate per-image scores (JSONL or CSV) against the human labels")
    ev.add_argument("--scores", required=True, metavar="FILE",
                    help="JSONL or CSV with columns subset, image, score and optional model")
    ev.add_argument("--allow-missing", action="store_true", help="drop images without a score (reported)")
    add_benchmark(ev)
    add_output(ev)
    ev.set_defaults(func=cmd_tia2_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textnorm`` console script.

    Example:
        >>> main(["tia2", "info", "--json"])  # doctest: +ELLIPSIS
        {...
        0
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"textnorm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
