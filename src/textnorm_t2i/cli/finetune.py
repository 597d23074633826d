"""``textnorm finetune`` (best-of-n, SFT, RL, DRaFT with LoRA) and ``textnorm push``."""

from __future__ import annotations

import argparse
import sys

from textnorm_t2i.cli.common import KeysHelp
from textnorm_t2i.errors import InputError


def cmd_finetune(args: argparse.Namespace) -> int:
    from textnorm_t2i.finetune.config import CONFIGS, load_finetune_config
    from textnorm_t2i.world.truth import WorldTruth

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

        out = run_rl(config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from,
                     truth=WorldTruth())
    elif args.method == "sft":
        from textnorm_t2i.finetune.sft import run_sft

        out = run_sft(config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from,
                      truth=WorldTruth())
    elif args.method == "draft":
        from textnorm_t2i.finetune.draft import run_draft

        out = run_draft(config, resume=args.resume, overwrite=args.overwrite, resume_from=args.resume_from,
                        truth=WorldTruth())
    else:
        if args.resume or args.resume_from:
            raise InputError("finetune --method bon has no checkpoints to resume; use --overwrite to run it again")
        from textnorm_t2i.finetune.bon import run_bon

        out = run_bon(config, overwrite=args.overwrite, truth=WorldTruth())
    print(f"results in {out}", file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from textnorm_t2i.finetune.lora import push_lora_to_hub

    url = push_lora_to_hub(args.lora, args.repo_id, private=not args.public, token_env=args.token_env)
    print(f"pushed {args.lora} to {url}", file=sys.stderr)
    return 0


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


def register(sub: argparse._SubParsersAction) -> None:
    """``finetune`` and ``push``."""
    push = sub.add_parser("push", help="upload a LoRA folder to a hub model repository (token from HF_TOKEN)")
    push.add_argument("--lora", required=True, metavar="DIR", help="a LoRA folder (e.g. a run's lora/)")
    push.add_argument("--repo-id", required=True, help="the model repository (created if missing)")
    push.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    push.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the token")
    push.set_defaults(func=cmd_push)

    ft = sub.add_parser("finetune", help="best-of-n, reward-weighted SFT, RL or reward-gradient (LoRA) fine-tuning",
                        description=_finetune_keys(),
                        formatter_class=KeysHelp)
    ft.add_argument("--method", choices=("bon", "sft", "rl", "draft"), required=True)
    ft.add_argument("--config", metavar="FILE", help="YAML config (see --print-config for every key)")
    ft.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable), "
                    "e.g. --set lr=1e-4 --set reward.textnorm=true")
    ft.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint")
    ft.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    ft.add_argument("--overwrite", action="store_true", help="clear an earlier run in the run folder and start again")
    ft.add_argument("--print-config", action="store_true", help="print every config key with its default and help")
    ft.set_defaults(func=cmd_finetune)

