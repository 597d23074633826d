"""``textnorm prompts generate``: contrastive prompt sets from rules or a language model."""

from __future__ import annotations

import argparse
import sys

from textnorm_t2i.cli.common import add_group, check_output, float_in, int_in
from textnorm_t2i.errors import InputError


def cmd_prompts_generate(args: argparse.Namespace) -> int:
    from textnorm_t2i.io import write_json_atomic
    from textnorm_t2i.prompts.files import read_prompt_list

    check_output(args.output, args.input)
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


def register(sub: argparse._SubParsersAction) -> None:
    """``prompts generate``."""
    psub = add_group(sub, "prompts", "contrastive prompt sets")
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

