"""The ``textnorm`` command: one module per command group, each with ``register(subparsers)``.

A command is a small function ``cmd_*`` taking parsed arguments and calling the library; bad input raises
:class:`~textnorm_t2i.errors.InputError`, which becomes a one-line message on stderr and exit code 2. Heavy
libraries (torch, diffusers) are imported inside the commands, so that ``textnorm --help`` starts at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from textnorm_t2i import __version__
from textnorm_t2i.allocator import keep_freed_memory
from textnorm_t2i.cli import finetune, prompts, rewards, study, tia2, train, world
from textnorm_t2i.cli.common import Parser
from textnorm_t2i.errors import InputError
from textnorm_t2i.rundir import RunInterrupted

GROUPS = (study, tia2, rewards, prompts, world, train, finetune)  # in the order of `textnorm --help`

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
    """The whole command line: every group registers its sub-commands."""
    parser = Parser(prog="textnorm", description="Confidence-aware reward optimization toolkit.",
                    epilog="example: textnorm tia2 table --published --format markdown")
    parser.add_argument("--version", action="version", version=f"textnorm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
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
    keep_freed_memory()  # faster large forward passes, same results (see textnorm_t2i.allocator)
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
