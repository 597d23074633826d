"""``textnorm tia2``: the TIA2 benchmark (info, the published table, evaluating and producing scores)."""

from __future__ import annotations

import argparse
import json
import sys

from textnorm_t2i.cli.common import (
    add_benchmark,
    add_group,
    add_output,
    add_reward,
    check_output,
    emit,
    write_jsonl,
)
from textnorm_t2i.cli.rewards import processes_note, reward_from_args
from textnorm_t2i.errors import InputError

PUBLISHED_NOTE = (
    "Published rows from the authors' per-prompt scores (kykim0/TextNorm). Note: their textnorm_* rows "
    "chose the temperature/lambda per prompt using that prompt's human labels (an oracle choice)."
)


def cmd_tia2_info(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.tia2 import load_benchmark

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
    if not args.published:
        raise InputError("tia2 table: pass --published (to score your own model, use `textnorm tia2 eval`)")
    check_output(args.output)
    emit(published_table(args.benchmark, args.subset, args.format, args.json), args.output)
    return 0


def cmd_tia2_eval(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.evaluate import evaluate_subset
    from textnorm_t2i.bench.report import render
    from textnorm_t2i.bench.scores_file import read_scores

    check_output(args.output, args.scores)
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
    emit(render(results, args.format, args.json, title=f"Alignment of {args.scores}"), args.output)
    return 0


def cmd_tia2_score(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.tia2 import load_benchmark
    from textnorm_t2i.distributed import is_main_process
    from textnorm_t2i.rewards.scoring import score_files

    check_output(args.output)
    subsets = load_benchmark(args.benchmark, args.subset, images=args.images)
    reward = reward_from_args(args)
    rows, skipped_all = [], []
    for name, subset in subsets.items():
        paths = [subset.image_path(img, must_exist=not args.skip_unreadable) for img in subset.images]
        scores, skipped = score_files(reward, paths, subset.captions, skip_unreadable=args.skip_unreadable)
        skipped_all += skipped
        rows += [{"subset": name, "image": img, "model": args.model_name or reward.name, "score": s}
                 for img, s in zip(subset.images, scores) if s is not None]
    if not is_main_process():
        return 0
    write_jsonl(args.output, rows)
    if skipped_all:
        print(f"textnorm: note: skipped {len(skipped_all)} unreadable or missing image(s), first: {skipped_all[0]}",
              file=sys.stderr)
    print(f"wrote {len(rows)} scores to {args.output}{processes_note()}", file=sys.stderr)
    return 0


def published_table(benchmark: str | None = None, subsets: list[str] | None = None, fmt: str = "table",
                    as_json: bool = False) -> str:
    """The paper's table from the published per-prompt scores, rendered."""
    from textnorm_t2i.bench.evaluate import published_table as table_of
    from textnorm_t2i.bench.report import render
    from textnorm_t2i.bench.tia2 import load_benchmark

    results = {name: table_of(s) for name, s in load_benchmark(benchmark, subsets).items()}
    return render(results, fmt, as_json, title="TIA2: published per-prompt alignment (mean over prompts)",
                  note=PUBLISHED_NOTE)


def register(sub: argparse._SubParsersAction) -> None:
    """``tia2 info | table | eval | score``."""
    tsub = add_group(sub, "tia2", "TIA2 benchmark: info, published table, evaluate your scores")

    info = tsub.add_parser("info", help="prompts, images, evaluated prompts and aligned fraction per subset")
    add_benchmark(info)
    info.add_argument("--json", action="store_true", help="print JSON")
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

    tscore = tsub.add_parser("score", help="score the benchmark images with a reward (output feeds tia2 eval)")
    tscore.add_argument("--images", metavar="DIR", help="folder of the images (DIR/<subset>/ or DIR/); default: the "
                        "benchmark's own images/ (shipped with --benchmark shapes)")
    tscore.add_argument("--subset", action="append", help="restrict to this subset (repeatable)")
    tscore.add_argument("--model-name", help="model name written to the file (default: the reward's)")
    add_benchmark(tscore)
    add_reward(tscore)
    tscore.set_defaults(func=cmd_tia2_score)
