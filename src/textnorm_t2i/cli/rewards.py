"""``textnorm rewards list``, ``score``, ``calibrate``, ``diagnose``: rewards, scoring and calibration."""

from __future__ import annotations

import argparse
import json
import sys

from textnorm_t2i.cli.common import (
    add_group,
    add_output,
    add_reward,
    check_output,
    emit,
    float_in,
    int_in,
    write_jsonl,
)
from textnorm_t2i.errors import InputError


def reward_from_args(args: argparse.Namespace):
    """The reward of a scoring command's options, built by the one factory."""
    from textnorm_t2i.objectives import build_reward
    from textnorm_t2i.rewards.spec import RewardSpec

    return build_reward(RewardSpec.from_cli(args.reward, args.reward_arg, args.textnorm, args.prompt_sets,
                                            args.temperature, args.scaling))


def processes_note() -> str:
    from textnorm_t2i.distributed import process_rank_world

    world = process_rank_world()[1]
    return f" (scored by {world} processes)" if world > 1 else ""


def cmd_rewards_list(args: argparse.Namespace) -> int:
    from textnorm_t2i.rewards.registry import list_rewards

    entries = list_rewards()
    if args.json:
        print(json.dumps([{"name": e.name, "description": e.description, "default": e.default_path}
                          for e in entries], indent=2))
        return 0
    width = max(len(e.name) for e in entries)
    for e in entries:
        default = f"  [default: {e.default_path}]" if e.default_path else ""
        print(f"{e.name:<{width}}  {e.description}{default}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from textnorm_t2i.distributed import is_main_process
    from textnorm_t2i.rewards.scoring import read_manifest, score_files

    check_output(args.output, args.manifest, args.prompt_sets)
    pairs = read_manifest(args.manifest)
    check_output(args.output, *{str(p) for p, _ in pairs})  # -o must not be one of the images scored
    reward = reward_from_args(args)
    scores, skipped = score_files(reward, [p for p, _ in pairs], [q for _, q in pairs],
                                  skip_unreadable=args.skip_unreadable)
    rows = [{"image": str(img), "prompt": prompt, "model": reward.name, "score": s}
            for (img, prompt), s in zip(pairs, scores) if s is not None]
    if not is_main_process():  # under accelerate launch, rank 0 writes the gathered scores
        return 0
    write_jsonl(args.output, rows)
    if skipped:
        print(f"textnorm: note: skipped {len(skipped)} unreadable image(s), first: {skipped[0]}", file=sys.stderr)
    print(f"wrote {len(rows)} scores to {args.output}{processes_note()}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.tia2 import load_subset
    from textnorm_t2i.calibrate.select import (
        DEFAULT_LAMS,
        DEFAULT_TEMPERATURES,
        select_hyperparameters,
        subset_set_rewards,
    )
    from textnorm_t2i.objectives import build_reward
    from textnorm_t2i.objectives.factory import member_specs
    from textnorm_t2i.rewards.spec import RewardSpec

    check_output(args.output)
    spec = RewardSpec.from_cli(args.reward, args.reward_arg, True, args.prompt_sets, 1.0, args.scaling)
    subset = load_subset(args.subset, args.benchmark, images=args.images)
    # Default sets: the benchmark's own; --prompt-sets rules|FILE: the factory's (one vocabulary per reward).
    sets = subset.prompt_sets if not args.prompt_sets else None
    members = [build_reward(single, sets=sets) for single in member_specs(spec)]
    member_sets = subset_set_rewards(subset, members, progress=True)
    selection = select_hyperparameters(
        subset, member_sets, temperatures=args.temperatures or DEFAULT_TEMPERATURES,
        lams=args.lams or DEFAULT_LAMS, ensemble_mode=args.ensemble, scaling=args.scaling, metric=args.metric,
        k=args.k, seed=args.seed, mode="per_prompt_oracle" if args.oracle else "cv")
    result = selection.to_dict()
    name = ("ORACLE " if args.oracle else "") + "textnorm(" + ",".join(r.split("=")[0] for r in args.reward) + ")"
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
    else:
        from textnorm_t2i.bench.report import render

        chosen = f"chosen: {result['chosen']}" if result["chosen"] else "chosen: per prompt (oracle)"
        text = render({subset.name: {name: result["heldout"]}}, args.format, title=selection.label, note=chosen)
    emit(text, args.output)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from textnorm_t2i.analysis.diagnose import diagnose, plot_reliability, render_table
    from textnorm_t2i.rewards.spec import RewardSpec

    check_output(args.output)
    check_output(args.plot)
    if bool(args.reward) == bool(args.from_json):
        raise InputError("give --reward (to diagnose) or --from-json (to render a saved diagnosis), one of the two")
    if args.from_json:
        # A saved `--json` result rendered again (as the docs' tables are), without rescoring anything.
        from textnorm_t2i.io import read_json

        saved = read_json(args.from_json)
        results = {saved["reward"]: saved} if isinstance(saved, dict) and "subsets" in saved else saved
        if not isinstance(results, dict) or not all(isinstance(r, dict) and "subsets" in r for r in results.values()):
            raise InputError(f"{args.from_json}: not a diagnosis (the output of textnorm diagnose --json)")
    else:
        results = {}
        for single in args.reward:
            spec = RewardSpec.from_cli(single, args.reward_arg)
            res = diagnose(spec, args.benchmark, args.subset, temperature=args.temperature,
                           clean_per_subset=args.clean_prompts, seed=args.seed,
                           perturbation_tests=not args.no_perturbations)
            results[res["reward"] if len(args.reward) == 1 else single] = res
    if args.plot:
        plot_reliability(results, args.plot)
    text = json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2) + "\n" \
        if args.json else render_table(results, args.format)
    emit(text, args.output)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``rewards list``, ``score``, ``calibrate``, ``diagnose``."""
    rsub = add_group(sub, "rewards", "reward models")
    rlist = rsub.add_parser("list", help="every registered reward")
    rlist.add_argument("--json", action="store_true", help="print JSON")
    rlist.set_defaults(func=cmd_rewards_list)

    score = sub.add_parser("score", help="score a manifest of (image, prompt) pairs")
    score.add_argument("--manifest", required=True, metavar="FILE", help="JSONL or CSV with image and prompt")
    add_reward(score)
    score.set_defaults(func=cmd_score)

    calibrate = sub.add_parser("calibrate", help="choose TextNorm temperature (and ensemble lambda) on a benchmark")
    calibrate.add_argument("--reward", action="append", required=True, metavar="NAME[=PATH]",
                           help="reward (repeat for an ensemble)")
    calibrate.add_argument("--reward-arg", action="append", metavar="KEY=VALUE")
    calibrate.add_argument("--subset", required=True)
    calibrate.add_argument("--images", metavar="DIR", help="folder of the benchmark images")
    calibrate.add_argument("--benchmark", metavar="DIR")
    calibrate.add_argument("--prompt-sets", metavar="FILE", help="JSON file, tia2[:subset] or rules "
                           "(default: the benchmark's own sets)")
    calibrate.add_argument("--temperatures", type=float_in(0, lo_exclusive=True), nargs="+",
                           help="grid (default: 17 values, 0.01..100, log)")
    calibrate.add_argument("--lams", type=float_in(0), nargs="+", help="lambda grid for --ensemble ur")
    calibrate.add_argument("--ensemble", choices=("mean", "ur", "min"), default="ur")
    calibrate.add_argument("--scaling", choices=("none", "minmax"), default="none")
    calibrate.add_argument("--metric", default="auroc", help="objective metric (default auroc)")
    calibrate.add_argument("--k", type=int_in(2, 1000), default=5, help="folds over prompts")
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--oracle", action="store_true",
                           help="per-prompt oracle choice with the test labels (the authors' released numbers)")
    add_output(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)

    diag = sub.add_parser("diagnose", help="where a reward's signal lives: raw/offset/contrast/margin AUROC, "
                          "contrastive accuracy per perturbation, TextNorm calibration",
                          epilog="example: textnorm diagnose --reward shapes-clip-a --benchmark shapes --json")
    diag.add_argument("--reward", action="append", metavar="NAME[=PATH]",
                      help="reward to diagnose (repeatable: one table, one reliability plot)")
    diag.add_argument("--from-json", metavar="FILE",
                      help="render a saved diagnosis (the output of --json) instead of diagnosing a reward")
    diag.add_argument("--reward-arg", action="append", metavar="KEY=VALUE", help="extra reward option (repeatable)")
    diag.add_argument("--benchmark", default="shapes", help="benchmark folder with images ('shapes' is shipped)")
    diag.add_argument("--subset", action="append", help="restrict to this subset (repeatable)")
    diag.add_argument("--temperature", type=float_in(0, lo_exclusive=True), default=1.0,
                      help="TextNorm temperature of the calibration check")
    diag.add_argument("--clean-prompts", type=int_in(1, 10_000), default=100,
                      help="rendered scenes per subset for the clean contrastive-accuracy test")
    diag.add_argument("--no-perturbations", action="store_true", help="skip the contrastive-accuracy tests")
    diag.add_argument("--seed", type=int, default=0, help="seed of the clean scenes")
    diag.add_argument("--plot", metavar="PNG", help="write the reliability diagram here")
    add_output(diag)
    diag.set_defaults(func=cmd_diagnose)
