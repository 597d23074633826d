"""The ``textnorm`` command.

Each sub-command is a small function ``cmd_*`` taking parsed arguments; bad input raises
:class:`~textnorm_t2i.errors.InputError`, which becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from textnorm_t2i.errors import InputError

PUBLISHED_NOTE = (
    "Published rows from the authors' per-prompt scores (kykim0/TextNorm). Note: their textnorm_* rows "
    "chose the temperature/lambda per prompt using that prompt's human labels (an oracle choice)."
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``textnorm: error: ...``, exit code 2) and defaults in every help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        print(f"textnorm: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}" if hi is not None
                                             else f"must be >= {lo}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float | None = None, lo_exclusive: bool = False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi])."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < lo or (lo_exclusive and value == lo) or (hi is not None and value > hi):
            bound = f"> {lo}" if lo_exclusive else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and <= {hi}' if hi is not None else ''}, "
                                             f"got {value}")
        return value

    parse.__name__ = "number"
    return parse


def _check_output(output: str | None, *inputs: str | None) -> None:
    """Fail before any work when ``-o`` cannot be written, or is one of the command's input files (the output
    would replace what the command reads)."""
    if output:
        from textnorm_t2i.io import check_writable

        target = check_writable(output)
        for given in inputs:
            if given and target.exists() and Path(given).exists() and target.samefile(given):
                raise InputError(f"{output}: is also an input ({given}); write the output to another file")


def _emit(text: str, output: str | None) -> None:
    """Print ``text``; with ``-o`` also write it atomically to the file."""
    from textnorm_t2i.io import write_text_atomic

    if output:
        write_text_atomic(output, text)
    sys.stdout.write(text)


# ----------------------------------------------------------------------------------------- tia2
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
    from textnorm_t2i.bench.evaluate import published_table
    from textnorm_t2i.bench.report import render
    from textnorm_t2i.bench.tia2 import load_benchmark

    if not args.published:
        raise InputError("tia2 table: pass --published (to score your own model, use `textnorm tia2 eval`)")
    _check_output(args.output)
    results = {name: published_table(s) for name, s in load_benchmark(args.benchmark, args.subset).items()}
    text = render(results, args.format, args.json, title="TIA2: published per-prompt alignment (mean over prompts)",
                  note=PUBLISHED_NOTE)
    _emit(text, args.output)
    return 0


def cmd_tia2_eval(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.evaluate import evaluate_subset
    from textnorm_t2i.bench.report import render
    from textnorm_t2i.bench.scores_file import read_scores

    _check_output(args.output, args.scores)
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


# ----------------------------------------------------------------------------------- rewards
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


def _reward_from_args(args: argparse.Namespace):
    from textnorm_t2i.scoring import build_reward

    return build_reward(args.reward, args.reward_arg, args.textnorm, args.prompt_sets, args.temperature,
                        args.scaling)


def _write_jsonl(path: str, rows: list[dict]) -> None:
    from textnorm_t2i.io import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def cmd_score(args: argparse.Namespace) -> int:
    from textnorm_t2i.scoring import is_main_process, read_manifest, score_files

    _check_output(args.output, args.manifest, args.prompt_sets)
    pairs = read_manifest(args.manifest)
    _check_output(args.output, *{str(p) for p, _ in pairs})  # -o must not be one of the images scored
    reward = _reward_from_args(args)
    scores, skipped = score_files(reward, [p for p, _ in pairs], [q for _, q in pairs],
                                  skip_unreadable=args.skip_unreadable)
    rows = [{"image": str(img), "prompt": prompt, "model": reward.name, "score": s}
            for (img, prompt), s in zip(pairs, scores) if s is not None]
    if not is_main_process():  # under accelerate launch, rank 0 writes the gathered scores
        return 0
    _write_jsonl(args.output, rows)
    if skipped:
        print(f"textnorm: note: skipped {len(skipped)} unreadable image(s), first: {skipped[0]}", file=sys.stderr)
    print(f"wrote {len(rows)} scores to {args.output}{_processes_note()}", file=sys.stderr)
    return 0


def cmd_tia2_score(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.tia2 import load_benchmark
    from textnorm_t2i.scoring import is_main_process, score_files

    _check_output(args.output)
    subsets = load_benchmark(args.benchmark, args.subset, images=args.images)
    reward = _reward_from_args(args)
    rows, skipped_all = [], []
    for name, subset in subsets.items():
        paths = [subset.image_path(img) if not args.skip_unreadable else _maybe_path(subset, img)
                 for img in subset.images]
        scores, skipped = score_files(reward, paths, subset.captions, skip_unreadable=args.skip_unreadable)
        skipped_all += skipped
        rows += [{"subset": name, "image": img, "model": args.model_name or reward.name, "score": s}
                 for img, s in zip(subset.images, scores) if s is not None]
    if not is_main_process():
        return 0
    _write_jsonl(args.output, rows)
    if skipped_all:
        print(f"textnorm: note: skipped {len(skipped_all)} unreadable or missing image(s), first: {skipped_all[0]}",
              file=sys.stderr)
    print(f"wrote {len(rows)} scores to {args.output}{_processes_note()}", file=sys.stderr)
    return 0


def _processes_note() -> str:
    from textnorm_t2i.scoring import process_rank_world

    world = process_rank_world()[1]
    return f" (scored by {world} processes)" if world > 1 else ""


def _maybe_path(subset, image: str):
    from pathlib import Path

    try:
        return subset.image_path(image)
    except InputError:
        return Path(str(subset.image_dir or ".")) / image


def _members(spec):
    """One single-reward spec per member of ``spec`` (each TextNorm-normalised on its own)."""
    from dataclasses import replace

    return [replace(spec, name=n, path=p) for n, p in zip(spec.names, spec.paths)]


def cmd_calibrate(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.tia2 import load_subset
    from textnorm_t2i.calibrate.select import (
        DEFAULT_LAMS,
        DEFAULT_TEMPERATURES,
        select_hyperparameters,
        subset_set_rewards,
    )
    from textnorm_t2i.rewards.factory import build_reward
    from textnorm_t2i.scoring import spec_from_cli

    _check_output(args.output)
    spec = spec_from_cli(args.reward, args.reward_arg, True, args.prompt_sets, 1.0, args.scaling)
    subset = load_subset(args.subset, args.benchmark, images=args.images)
    # Default sets: the benchmark's own; --prompt-sets rules|FILE: the factory's (one vocabulary per reward).
    sets = subset.prompt_sets if not args.prompt_sets else None
    members = [build_reward(single, sets=sets) for single in _members(spec)]
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
    _emit(text, args.output)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from textnorm_t2i.scoring import spec_from_cli
    from textnorm_t2i.study.diagnose import diagnose, plot_reliability, render_table

    _check_output(args.output)
    _check_output(args.plot)
    if bool(args.reward) == bool(args.from_json):
        raise InputError("give --reward (to diagnose) or --from-json (to render a saved diagnosis), one of the two")
    if args.from_json:
        # A saved `--json` result rendered again (as the README's tables are), without rescoring anything.
        from textnorm_t2i.io import read_json

        saved = read_json(args.from_json)
        results = {saved["reward"]: saved} if isinstance(saved, dict) and "subsets" in saved else saved
        if not isinstance(results, dict) or not all(isinstance(r, dict) and "subsets" in r for r in results.values()):
            raise InputError(f"{args.from_json}: not a diagnosis (the output of textnorm diagnose --json)")
    else:
        results = {}
        for single in args.reward:
            spec = spec_from_cli(single, args.reward_arg)
            res = diagnose(spec, args.benchmark, args.subset, temperature=args.temperature,
                           clean_per_subset=args.clean_prompts, seed=args.seed,
                           perturbation_tests=not args.no_perturbations)
            results[res["reward"] if len(args.reward) == 1 else single] = res
    if args.plot:
        plot_reliability(results, args.plot)
    text = json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2) + "\n" \
        if args.json else render_table(results, args.format)
    _emit(text, args.output)
    return 0


# ----------------------------------------------------------------------------------- prompts
def cmd_prompts_generate(args: argparse.Namespace) -> int:
    from textnorm_t2i.io import write_json_atomic
    from textnorm_t2i.prompts.files import read_prompt_list

    _check_output(args.output, args.input)
    prompts = read_prompt_list(args.input)
    if args.method == "rules":
        from textnorm_t2i.prompts.rules import rule_sets

        sets = rule_sets(prompts)
    else:
        from textnorm_t2i.prompts import llm

        common = {"n": args.n, "max_retries": args.max_retries, "cache_dir": args.cache_dir}
        if args.local_model:
            generator = llm.LocalLMGenerator(args.local_model, **common)
        elif args.base_url and args.model:
            generator = llm.OpenAIChatGenerator(args.base_url, args.model, api_key_env=args.api_key_env,
                                                timeout=args.timeout, **common)
        else:
            raise InputError("prompts generate --method llm: give --base-url and --model, or --local-model PATH")
        sets = generator.generate(prompts)
    write_json_atomic(args.output, sets)
    empty = sum(1 for v in sets.values() if not v)
    print(f"wrote {len(sets)} prompt sets to {args.output}" + (f" ({empty} empty: no rule applies)" if empty else ""),
          file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------- world
def cmd_world_render(args: argparse.Namespace) -> int:
    from textnorm_t2i.world.scene import render

    if not args.output.lower().endswith(".png"):
        raise InputError(f"{args.output}: the output must be a .png file")
    _check_output(args.output)
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


# ------------------------------------------------------------------------------- train/generate
def cmd_train_generator(args: argparse.Namespace) -> int:
    from textnorm_t2i.config import load_config, render_yaml
    from textnorm_t2i.generate.config import GeneratorTrainConfig

    if args.print_config:
        print(render_yaml(GeneratorTrainConfig, "textnorm train generator: every key, its default and help"), end="")
        return 0
    config = load_config(GeneratorTrainConfig, args.config, args.set)
    from textnorm_t2i.generate.train import train_generator

    out = train_generator(config, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"pipeline written to {out}", file=sys.stderr)
    return 0


def cmd_train_reward(args: argparse.Namespace) -> int:
    from textnorm_t2i.config import load_config, render_yaml
    from textnorm_t2i.rewards.train_config import RewardTrainConfig

    if args.print_config:
        print(render_yaml(RewardTrainConfig, "textnorm train reward: every key, its default and help"), end="")
        return 0
    if args.config is None:
        raise InputError("train reward: give --config FILE (or --print-config)")
    from textnorm_t2i.config import read_yaml

    if read_yaml(args.config).get("method") == "detect":
        from textnorm_t2i.rewards.train_config import DetectTrainConfig

        detect = load_config(DetectTrainConfig, args.config, args.set)
        from textnorm_t2i.rewards.train_detect import train_detect_reward

        out = train_detect_reward(detect, args.out or f"runs/{detect.name}", overwrite=args.overwrite)
        print(f"reward model written to {out}", file=sys.stderr)
        return 0
    if read_yaml(args.config).get("method") == "preference":
        from textnorm_t2i.rewards.train_config import PrefTrainConfig

        pref = load_config(PrefTrainConfig, args.config, args.set)
        from textnorm_t2i.rewards.train_pref import train_pref_reward

        out = train_pref_reward(pref, args.out or f"runs/{pref.name}", overwrite=args.overwrite)
        print(f"reward model written to {out}", file=sys.stderr)
        return 0
    config = load_config(RewardTrainConfig, args.config, args.set)
    from textnorm_t2i.rewards.train_shapes import train_reward

    out = train_reward(config, args.out or f"runs/{config.name}", overwrite=args.overwrite)
    print(f"reward model written to {out}", file=sys.stderr)
    return 0


IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}


def cmd_generate(args: argparse.Namespace) -> int:
    from textnorm_t2i.io import atomic_write

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix and suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{out}: expected an image file ({', '.join(IMAGE_SUFFIXES)}) for a grid, or a folder "
                         "name without a suffix for one file per sample")
    if suffix:
        _check_output(str(out))
    elif out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    elif out.is_dir() and any(out.glob("sample_*.png")):
        raise InputError(f"{out}: already holds samples; choose an empty folder")
    else:
        _check_output(str(out / "sample_000.png"))
    from textnorm_t2i.generate.grid import image_grid
    from textnorm_t2i.generate.load import load_generator

    if args.lora and not Path(args.lora).is_dir():
        raise InputError(f"--lora {args.lora}: no such folder")
    pipe = load_generator(args.model)
    if args.lora:
        from textnorm_t2i.finetune.lora import load_lora_folder

        load_lora_folder(pipe.unet, args.lora)
    images = pipe([args.prompt] * args.n, seed=args.seed, num_inference_steps=args.steps,
                  guidance_scale=args.guidance, progress=args.n >= 64).images  # many samples: show the steps
    if suffix:
        with atomic_write(out, "wb") as f:
            image_grid(images, rows=max(1, round(len(images) ** 0.5)), scale=4).save(f, format=IMAGE_SUFFIXES[suffix])
    else:
        for i, img in enumerate(images):
            with atomic_write(out / f"sample_{i:03d}.png", "wb") as f:
                img.save(f, format="PNG")
    print(f"wrote {len(images)} sample(s) to {out}", file=sys.stderr)
    return 0


def cmd_world_benchmark_build(args: argparse.Namespace) -> int:
    from textnorm_t2i.study.benchmark import build_shapes_benchmark

    out = build_shapes_benchmark(args.output, args.prompts_per_subset, args.samples, args.seed, args.model,
                                 args.steps, overwrite=args.overwrite)
    print(f"TIA2-Shapes written to {out}", file=sys.stderr)
    return 0


def cmd_world_benchmark_table(args: argparse.Namespace) -> int:
    from textnorm_t2i.bench.report import render
    from textnorm_t2i.study.misalignment import misalignment_table

    results = misalignment_table(args.benchmark, args.reward or ("shapes-clip-a", "shapes-clip-b"), k=args.k,
                                 oracle=args.oracle)
    note = ("textnorm(...) and ensembles: temperature/lambda chosen by "
            f"{args.k}-fold cross-validation over prompts; held-out metrics.")
    if args.json:
        text = json.dumps(results, indent=2) + "\n"
    else:
        text = render(results, args.format, title=f"Misalignment of proxy rewards on {args.benchmark}", note=note)
    _emit(text, args.output)
    return 0


# ---------------------------------------------------------------------------------- finetune
def cmd_finetune(args: argparse.Namespace) -> int:
    from textnorm_t2i.finetune.config import CONFIGS, load_finetune_config

    if args.print_config:
        from textnorm_t2i.config import render_yaml

        cls = CONFIGS[args.method]
        print(render_yaml(cls, f"textnorm finetune --method {args.method}: every key, its default and help",
                          cls(method=args.method)), end="")
        return 0
    if args.config is None:
        raise InputError("finetune: give --config FILE (or --print-config)")
    config = load_finetune_config(args.method, args.config, args.set)
    if args.method == "rl":
        from textnorm_t2i.finetune.rl import run_rl

        out = run_rl(config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from)
    elif args.method == "sft":
        from textnorm_t2i.finetune.sft import run_sft

        out = run_sft(config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from)
    elif args.method == "draft":
        from textnorm_t2i.finetune.draft import run_draft

        out = run_draft(config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from)
    else:
        if args.resume or args.resume_from:
            raise InputError("finetune --method bon has no checkpoints to resume; use --overwrite to run it again")
        from textnorm_t2i.finetune.bon import run_bon

        out = run_bon(config, overwrite=args.overwrite)
    print(f"results in {out}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: the published TIA2 table, then the misalignment table of
    the embedded proxy rewards on the shipped TIA2-Shapes benchmark."""
    from textnorm_t2i.bench.tia2 import shipped_shapes_dir

    ns = argparse.Namespace(published=True, benchmark=None, subset=None, format="table", json=False, output=None)
    cmd_tia2_table(ns)
    if (shipped_shapes_dir() / "human_annotations").is_dir():
        print()
        cmd_world_benchmark_table(argparse.Namespace(benchmark="shapes", reward=None, k=5, json=False,
                                                     format="table", output=None, oracle=False))
    # A reduced study: every objective's best-of-n on one shared pool of a few prompts.
    from textnorm_t2i.study.config import load_study_config
    from textnorm_t2i.study.run import run_study

    root = Path(__file__).resolve().parents[2]
    demo_config = root / "configs" / "study-demo.yaml"
    if demo_config.is_file():
        print("\nreduced study (configs/study-demo.yaml): best-of-n of every objective on one shared pool",
              file=sys.stderr)
        out = run_study(load_study_config(str(demo_config)), overwrite=True)
        print(f"\nthis demo's study report: {out.resolve() / 'report.html'}")
        shipped = root / "docs" / "study" / "report.html"
        if shipped.is_file():
            print(f"the full study's report (configs/study.yaml, committed): {shipped}")
    return 0


def cmd_study_run(args: argparse.Namespace) -> int:
    from textnorm_t2i.study.config import StudyConfig, load_study_config

    if args.print_config:
        from textnorm_t2i.config import render_yaml

        print(render_yaml(StudyConfig, "textnorm study run: every key, its default and help", StudyConfig()), end="")
        return 0
    config = load_study_config(args.config, args.set)
    from textnorm_t2i.study.run import run_study

    out = run_study(config, resume=args.resume, overwrite=args.overwrite, only=args.only, redo=args.redo)
    from textnorm_t2i.scoring import is_main_process

    if not is_main_process():
        return 0
    if args.only and "report" not in args.only:
        print(f"stages {', '.join(args.only)} done in {config.work}", file=sys.stderr)
    else:
        print(f"report: {out / 'report.html'}", file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from textnorm_t2i.finetune.lora import push_lora_to_hub

    url = push_lora_to_hub(args.lora, args.repo_id, private=not args.public, token_env=args.token_env)
    print(f"pushed {args.lora} to {url}", file=sys.stderr)
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


# ------------------------------------------------------------------------------------ parser
EXAMPLES = {
    "demo": "textnorm demo",
    "tia2": "textnorm tia2 table --published",
    "tia2 info": "textnorm tia2 info --json",
    "tia2 table": "textnorm tia2 table --published --format markdown",
    "tia2 eval": "textnorm tia2 eval --scores scores.jsonl --format markdown",
    "tia2 score": "textnorm tia2 score --benchmark shapes --reward shapes-clip-a --textnorm -o scores.jsonl",
    "rewards": "textnorm rewards list",
    "rewards list": "textnorm rewards list",
    "score": "textnorm score --manifest pairs.jsonl --reward clip=/models/clip-vit-b32 -o scores.jsonl",
    "calibrate": "textnorm calibrate --reward shapes-clip-a --benchmark shapes --subset counting --k 5",
    "prompts": "textnorm prompts generate --method rules --in prompts.txt -o sets.json",
    "prompts generate": "textnorm prompts generate --method rules --in prompts.txt -o sets.json",
    "world": "textnorm world judge --prompt 'two red circles' image.png",
    "world render": "textnorm world render --prompt 'two red circles' -o scene.png",
    "world judge": "textnorm world judge --prompt 'two red circles' --exit-code image.png",
    "world prompts": "textnorm world prompts --subset counting --n 5",
    "world benchmark": "textnorm world benchmark table --benchmark shapes",
    "world benchmark build": "textnorm world benchmark build -o my-shapes",
    "world benchmark table": "textnorm world benchmark table --benchmark shapes --format markdown",
    "train": "textnorm train reward --config configs/reward-pref.yaml --out runs/pref",
    "train generator": "textnorm train generator --out runs/generator --set steps=2000",
    "train reward": "textnorm train reward --config configs/reward-a.yaml --out runs/reward-a",
    "generate": "textnorm generate --prompt 'two red circles' --lora runs/rl/lora -o grid.png",
    "finetune": "textnorm finetune --method rl --config configs/rl.yaml --set lr=1e-3 [--resume]",
    "study": "textnorm study run --config configs/study.yaml --resume",
    "push": "textnorm push --lora runs/rl/lora --repo-id me/shapes-rl",
}


def _finetune_keys() -> str:
    """The finetune help's list of config keys per method (all of them, with defaults: --print-config)."""
    import dataclasses

    from textnorm_t2i.finetune.config import CONFIGS

    lines = ["Config keys (YAML or --set KEY=VALUE; every key with its type, default and help:",
             "textnorm finetune --method M --print-config):"]
    import textwrap

    for method, cls in CONFIGS.items():
        lines += textwrap.wrap(", ".join(f.name for f in dataclasses.fields(cls)), 76,
                               initial_indent=f"  {method}: ", subsequent_indent="       ")
    return "\n".join(lines)


def _add_examples(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every sub-command's help an example (its own epilog wins)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = f"{path} {name}".strip()
                if not sub.epilog and key in EXAMPLES:
                    sub.epilog = f"example: {EXAMPLES[key]}"
                _add_examples(sub, key)


def build_parser() -> argparse.ArgumentParser:
    from textnorm_t2i import __version__

    parser = Parser(prog="textnorm", description="Confidence-aware reward optimization toolkit.",
                    epilog="example: textnorm tia2 table --published --format markdown")
    parser.add_argument("--version", action="version", version=f"textnorm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

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

    rewards = sub.add_parser("rewards", help="reward models")
    rsub = rewards.add_subparsers(dest="rewards_command", required=True)
    rlist = rsub.add_parser("list", help="every registered reward")
    rlist.add_argument("--json", action="store_true")
    rlist.set_defaults(func=cmd_rewards_list)

    def add_reward(p: argparse.ArgumentParser, textnorm: bool = True) -> None:
        p.add_argument("--reward", required=True, metavar="NAME[=PATH]", help="registered reward, optional local path")
        p.add_argument("--reward-arg", action="append", metavar="KEY=VALUE", help="extra reward option (repeatable)")
        if textnorm:
            p.add_argument("--textnorm", action="store_true", help="normalise the reward over contrastive prompts")
            p.add_argument("--prompt-sets", metavar="FILE", help="contrastive sets: JSON file, tia2[:subset] or rules")
            p.add_argument("--temperature", type=float_in(0, lo_exclusive=True), default=1.0,
                           help="TextNorm softmax temperature")
            p.add_argument("--scaling", choices=("none", "minmax"), default="none", help="scale each set first")
        p.add_argument("--skip-unreadable", action="store_true", help="skip unreadable images (reported)")
        p.add_argument("-o", "--output", required=True, metavar="OUT", help="scores JSONL to write")

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

    prompts = sub.add_parser("prompts", help="contrastive prompt sets")
    psub = prompts.add_subparsers(dest="prompts_command", required=True)
    gen = psub.add_parser("generate", help="contrastive sets from rules or a language model")
    gen.add_argument("--method", choices=("rules", "llm"), required=True)
    gen.add_argument("--in", dest="input", required=True, metavar="PROMPTS", help="text file (one per line) or JSON")
    gen.add_argument("-o", "--output", required=True, metavar="SETS.json")
    gen.add_argument("--base-url", help="OpenAI-compatible API base URL, e.g. http://localhost:8000/v1")
    gen.add_argument("--model", help="model name at that API")
    gen.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    gen.add_argument("--local-model", metavar="PATH", help="local transformers causal LM folder")
    gen.add_argument("--n", type=int_in(1, 100), default=8, help="contrastive prompts asked per prompt")
    gen.add_argument("--max-retries", type=int_in(0, 100), default=3, help="retries per prompt")
    gen.add_argument("--timeout", type=float_in(0, 3600, lo_exclusive=True), default=60.0, help="seconds per request")
    gen.add_argument("--cache-dir", default="~/.cache/textnorm/llm")
    gen.set_defaults(func=cmd_prompts_generate)

    tscore = tsub.add_parser("score", help="score the benchmark images with a reward (output feeds tia2 eval)")
    tscore.add_argument("--images", metavar="DIR", help="folder of the images (DIR/<subset>/ or DIR/); default: the "
                        "benchmark's own images/ (shipped with --benchmark shapes)")
    tscore.add_argument("--subset", action="append", help="restrict to this subset (repeatable)")
    tscore.add_argument("--model-name", help="model name written to the file (default: the reward's)")
    add_benchmark(tscore)
    add_reward(tscore)
    tscore.set_defaults(func=cmd_tia2_score)

    world = sub.add_parser("world", help="the embedded synthetic world")
    wsub = world.add_subparsers(dest="world_command", required=True)
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

    wb = wsub.add_parser("benchmark", help="TIA2-Shapes: build it, or print its misalignment table")
    wbsub = wb.add_subparsers(dest="benchmark_command", required=True)
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

    train = sub.add_parser("train", help="train the embedded models")
    trsub = train.add_subparsers(dest="train_command", required=True)
    tg = trsub.add_parser("generator", help="train the embedded text-to-image model from scratch")
    tg.add_argument("--config", metavar="FILE", help="YAML config, e.g. configs/generator.yaml (default: built-in)")
    tg.add_argument("--out", default="runs/generator", help="run folder (checkpoints, logs, final pipeline)")
    tg.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    tg.add_argument("--overwrite", action="store_true", help="clear an earlier run in --out and start again")
    tg.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    tg.add_argument("--print-config", action="store_true", help="print every config key with its default and help")
    tg.set_defaults(func=cmd_train_generator)
    trw = trsub.add_parser("reward", help="train an embedded proxy reward model")
    trw.add_argument("--config", metavar="FILE", help="YAML config (see --print-config)")
    trw.add_argument("--out", help="output folder (default runs/<name>)")
    trw.add_argument("--overwrite", action="store_true", help="replace an earlier reward in --out")
    trw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    trw.add_argument("--print-config", action="store_true", help="print every config key with its default and help")
    trw.set_defaults(func=cmd_train_reward)

    gen_img = sub.add_parser("generate", help="sample images from the embedded generator")
    gen_img.add_argument("--prompt", required=True)
    gen_img.add_argument("--n", type=int_in(1, 1024), default=8, help="samples")
    gen_img.add_argument("--seed", type=int, default=0, help="noise seed")
    gen_img.add_argument("--steps", type=int_in(1, 1000), default=25, help="DDIM steps")
    gen_img.add_argument("--guidance", type=float_in(0, 100), default=3.0, help="classifier-free guidance scale")
    gen_img.add_argument("--model", default="shapes", help="'shapes' (shipped) or a pipeline folder")
    gen_img.add_argument("--lora", metavar="DIR", help="a LoRA folder (adapter_config.json + "
                         "adapter_model.safetensors), e.g. a fine-tuning run's lora/")
    gen_img.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="an image file (.png, .jpg, ...) for a grid, or a folder for one PNG per sample")
    gen_img.set_defaults(func=cmd_generate)

    push = sub.add_parser("push", help="upload a LoRA folder to a hub model repository (token from HF_TOKEN)")
    push.add_argument("--lora", required=True, metavar="DIR", help="a LoRA folder (e.g. a run's lora/)")
    push.add_argument("--repo-id", required=True, help="the model repository (created if missing)")
    push.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    push.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the token")
    push.set_defaults(func=cmd_push)

    ft = sub.add_parser("finetune", help="best-of-n, reward-weighted SFT, RL or reward-gradient (LoRA) fine-tuning",
                        description=_finetune_keys(),
                        formatter_class=type("KeysHelp", (argparse.RawDescriptionHelpFormatter,
                                                          argparse.ArgumentDefaultsHelpFormatter), {}))
    ft.add_argument("--method", choices=("bon", "sft", "rl", "draft"), required=True)
    ft.add_argument("--config", metavar="FILE", help="YAML config (see --print-config for every key)")
    ft.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable), "
                    "e.g. --set lr=1e-4 --set reward.textnorm=true")
    ft.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint")
    ft.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    ft.add_argument("--overwrite", action="store_true", help="clear an earlier run in the run folder and start again")
    ft.add_argument("--print-config", action="store_true", help="print every config key with its default and help")
    ft.set_defaults(func=cmd_finetune)

    study = sub.add_parser("study", help="the study: does optimising TextNorm give better-aligned models?")
    ssub = study.add_subparsers(dest="study_command", required=True, parser_class=Parser)
    ssum = ssub.add_parser("summary", help="the markdown summary of a study's results.json (the README's section)",
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
    _add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textnorm`` console script.

    Example:
        >>> main(["tia2", "info", "--json"])  # doctest: +ELLIPSIS
        {...
        0
    """
    args = build_parser().parse_args(argv)
    from textnorm_t2i.rundir import RunInterrupted

    try:
        return args.func(args)
    except InputError as e:
        print(f"textnorm: error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:
        print(f"textnorm: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("textnorm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("textnorm: error: out of memory (try smaller inputs or batches)", file=sys.stderr)
        return 2
    except RecursionError:  # an input file nested thousands of levels deep (JSON, YAML)
        print("textnorm: error: an input is nested too deeply to read", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"textnorm: error: {where}{e.strerror or type(e).__name__}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Under ``accelerate launch``, leave the process group before exit: torn down by the interpreter's exit
    instead, gloo's threads can abort the process ("terminate called without an active exception")."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
