"""``textnorm train`` (the embedded generator, the embedded rewards) and ``textnorm generate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from textnorm_t2i.cli.common import add_group, add_run_options, check_output, float_in, int_in
from textnorm_t2i.errors import InputError

IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}


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


def cmd_generate(args: argparse.Namespace) -> int:
    from textnorm_t2i.io import atomic_write

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix and suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{out}: expected an image file ({', '.join(IMAGE_SUFFIXES)}) for a grid, or a folder "
                         "name without a suffix for one file per sample")
    if suffix:
        check_output(str(out))
    elif out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    elif out.is_dir() and any(out.glob("sample_*.png")):
        raise InputError(f"{out}: already holds samples; choose an empty folder")
    else:
        check_output(str(out / "sample_000.png"))
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


def cmd_train_reward(args: argparse.Namespace) -> int:
    from textnorm_t2i.config import render_yaml
    from textnorm_t2i.rewards.train_config import RewardTrainConfig, load_reward_train_config

    if args.print_config:
        print(render_yaml(RewardTrainConfig, "textnorm train reward: every key, its default and help"), end="")
        return 0
    if args.config is None:
        raise InputError("train reward: give --config FILE (or --print-config)")
    config = load_reward_train_config(args.config, args.set)
    from textnorm_t2i.rewards.training import train_reward_model

    out = train_reward_model(config, args.out, overwrite=args.overwrite)
    print(f"reward model written to {out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """``train generator | reward`` and ``generate``."""
    trsub = add_group(sub, "train", "train the embedded models")
    tg = trsub.add_parser("generator", help="train the embedded text-to-image model from scratch")
    tg.add_argument("--config", metavar="FILE", help="YAML config, e.g. configs/generator.yaml "
                    "(default: the built-in one)")
    tg.add_argument("--out", default="runs/generator", help="run folder (checkpoints, logs, final pipeline)")
    tg.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    tg.add_argument("--overwrite", action="store_true", help="clear an earlier run in --out and start again")
    add_run_options(tg)
    tg.set_defaults(func=cmd_train_generator)
    trw = trsub.add_parser("reward", help="train an embedded proxy reward model")
    trw.add_argument("--config", metavar="FILE", help="YAML config (see --print-config)")
    trw.add_argument("--out", help="output folder (default runs/<name>)")
    trw.add_argument("--overwrite", action="store_true", help="replace an earlier reward in --out")
    add_run_options(trw)
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

