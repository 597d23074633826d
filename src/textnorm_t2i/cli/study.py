"""``textnorm study run | summary`` and ``textnorm demo`` (the main job on the embedded default)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from textnorm_t2i.cli.common import add_group
from textnorm_t2i.errors import InputError


def cmd_study_run(args: argparse.Namespace) -> int:
    from textnorm_t2i.study.config import StudyConfig, load_study_config

    if args.print_config:
        from textnorm_t2i.config import render_yaml

        print(render_yaml(StudyConfig, "textnorm study run: every key, its default and help", StudyConfig()), end="")
        return 0
    config = load_study_config(args.config, args.set)
    from textnorm_t2i.study.run import run_study

    out = run_study(config, resume=args.resume, overwrite=args.overwrite, only=args.only, redo=args.redo)
    from textnorm_t2i.distributed import is_main_process

    if not is_main_process():
        return 0
    if args.only and "report" not in args.only:
        print(f"stages {', '.join(args.only)} done in {config.work}", file=sys.stderr)
    else:
        print(f"report: {out / 'report.html'}", file=sys.stderr)
    return 0


def cmd_study_summary(args: argparse.Namespace) -> int:
    from textnorm_t2i.io import read_json
    from textnorm_t2i.study.summary import summary_markdown

    path = Path(args.results)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a study's results.json")
    if not path.is_file():
        raise InputError(f"{path}: no such file (a study's results.json; run textnorm study run first)")
    results = read_json(path)
    expected = ("config", "prompts", "bon")
    if not isinstance(results, dict) or any(k not in results for k in expected):
        raise InputError(f"{path}: not a study's results.json (expected an object with {', '.join(expected)}, ...)")
    try:
        text = summary_markdown(results)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as e:  # a file the study did not write
        raise InputError(f"{path}: not a complete study's results.json ({type(e).__name__}: {e})") from None
    print(text, end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: the published TIA2 table, the misalignment table of the embedded
    proxy rewards on the shipped TIA2-Shapes benchmark, then a reduced study (its config ships in the package,
    so the demo runs the same from an installed wheel)."""
    from textnorm_t2i.analysis.misalignment import EMBEDDED_REWARDS, misalignment_text
    from textnorm_t2i.bench.tia2 import shipped_shapes_dir
    from textnorm_t2i.cli.tia2 import published_table
    from textnorm_t2i.study.config import load_study_config, shipped_demo_config
    from textnorm_t2i.study.run import run_study

    sys.stdout.write(published_table())
    if (shipped_shapes_dir() / "human_annotations").is_dir():
        print()
        sys.stdout.write(misalignment_text("shapes", EMBEDDED_REWARDS, k=5))
    print("\nreduced study (study-demo.yaml, shipped in the package): best-of-n of every objective on one shared "
          "pool", file=sys.stderr)
    out = run_study(load_study_config(str(shipped_demo_config())), overwrite=True)
    print(f"\nthis demo's study report: {out.resolve() / 'report.html'}")
    shipped = Path("docs") / "study" / "report.html"
    if shipped.is_file():  # in a checkout of the repository
        print(f"the full study's report (configs/study.yaml, committed): {shipped.resolve()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``demo`` and ``study summary | run``."""
    demo = sub.add_parser("demo", help="run the main job on the embedded default")
    demo.set_defaults(func=cmd_demo)

    ssub = add_group(sub, "study", "the study: does optimising TextNorm give better-aligned models?")
    ssum = ssub.add_parser("summary", help="the markdown summary of a study's results.json (docs/study.md's section)",
                           epilog="example: textnorm study summary --results docs/study/results.json")
    ssum.add_argument("--results", default="docs/study/results.json", metavar="FILE", help="a study's results.json")
    ssum.set_defaults(func=cmd_study_summary)
    srun = ssub.add_parser("run", help="run (or --resume) the study in stages; writes report.html, results.json, "
                           "samples.jsonl", epilog="example: textnorm study run --config configs/study.yaml --resume")
    srun.add_argument("--config", metavar="FILE", help="YAML config (default: every default; see --print-config)")
    srun.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    srun.add_argument("--resume", action="store_true", help="continue: stages already done are not run again")
    srun.add_argument("--overwrite", action="store_true", help="clear an earlier study's work folder and start again")
    srun.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (the others must be done)")
    srun.add_argument("--redo", nargs="+", metavar="STAGE", help="run these stages again even when done")
    srun.add_argument("--print-config", action="store_true", help="print every config key with its default and help")
    srun.set_defaults(func=cmd_study_run)
