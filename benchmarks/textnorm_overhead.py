"""Cost of TextNorm over a dual-encoder reward, measured side by side in one run.

Scores the same images (a TIA2-like batch: 8 prompts x 32 images) with a CLIP-architecture reward
built locally (random weights, ViT-B/32-like proportions at reduced width), plainly and with
TextNorm over 32 contrastive prompts per image. Both start with an empty text cache, so the
TextNorm side pays for embedding every contrastive prompt once. The last line is the ratio.

    python benchmarks/textnorm_overhead.py [--repeats 3] [-o docs/benchmarks/textnorm_overhead.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from textnorm_t2i.calibrate import TextNorm  # noqa: E402
from textnorm_t2i.rewards.clip import CLIPReward  # noqa: E402
from tiny_models import WORDS, word_tokenizer  # noqa: E402


def build_clip(path: Path) -> CLIPReward:
    from transformers import CLIPConfig, CLIPModel

    tokenizer, vocab = word_tokenizer()
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=128, intermediate_size=512, num_hidden_layers=6,
                         num_attention_heads=4, max_position_embeddings=77, pad_token_id=0,
                         bos_token_id=vocab["[BOS]"], eos_token_id=vocab["[EOS]"]),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
                           image_size=224, patch_size=32),
        projection_dim=64)
    model = CLIPModel(cfg).eval()
    return CLIPReward(model, tokenizer, batch_size=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contrastive", type=int, default=32)
    parser.add_argument("-o", "--output", help="also write the results as JSON (docs/benchmarks/, quoted by the docs)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(256, 3, 224, 224, generator=g)
    words = [w for w in WORDS if w not in ("a", "an", "the", "of", "and", "to")]
    base_prompts = [f"a photo of {words[i]} {words[i + 1]}" for i in range(8)]
    prompts = [base_prompts[i // 32] for i in range(256)]
    sets = {p: [f"a photo of {words[(i + k) % len(words)]} {words[(i + 2 * k + 3) % len(words)]} {k}"
                for k in range(args.contrastive)] for i, p in enumerate(base_prompts)}
    with tempfile.TemporaryDirectory() as tmp:
        reward = build_clip(Path(tmp))
        plain_t, tn_t = [], []
        for _ in range(args.repeats):
            reward._text_cache.clear()
            t = time.perf_counter()
            plain = reward.score(images, prompts)
            plain_t.append(time.perf_counter() - t)
            reward._text_cache.clear()
            tn = TextNorm(reward, sets, temperature=1.0)
            t = time.perf_counter()
            normed = tn.score(images, prompts)
            tn_t.append(time.perf_counter() - t)
    assert plain.shape == normed.shape == (256,)
    print(f"images: 256 (8 prompts x 32), contrastive prompts per image: {args.contrastive}, "
          f"torch threads: {torch.get_num_threads()}")
    print(f"plain reward   (best of {args.repeats}): {min(plain_t):.3f} s")
    print(f"TextNorm reward (best of {args.repeats}): {min(tn_t):.3f} s")
    embedded = embedded_ratio(args.repeats, args.contrastive)
    if embedded is not None:
        print(f"embedded reward shapes-clip-b, 1024 images at 32x32: TextNorm/plain ratio {embedded:.2f}")
    print(f"TextNorm/plain ratio {min(tn_t) / min(plain_t):.2f}")
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, {
            "date": time.strftime("%Y-%m-%d"), "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
            "contrastive": args.contrastive, "plain_seconds": min(plain_t), "textnorm_seconds": min(tn_t),
            "clip_ratio": min(tn_t) / min(plain_t), "embedded_ratio": embedded})


def embedded_ratio(repeats: int, contrastive: int) -> float | None:
    """The same measurement with the shipped embedded reward (world prompts, rule-based sets)."""
    from textnorm_t2i.prompts.rules import rule_set
    from textnorm_t2i.rewards.registry import load_reward
    from textnorm_t2i.world.grammar import sample_prompts
    from textnorm_t2i.world.vocab import COLORS

    try:
        reward = load_reward("shapes-clip-b", batch_size=256)
    except Exception:  # not shipped in this checkout
        return None
    prompts = sample_prompts("composition", 32, seed=0)
    sets = {p: (rule_set(p, colors=tuple(COLORS)) * 4)[:contrastive] for p in prompts}
    images = torch.rand(1024, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch_prompts = [prompts[i // 32] for i in range(1024)]
    plain_t, tn_t = [], []
    for _ in range(repeats):
        reward._text_cache.clear()
        t = time.perf_counter()
        reward.score(images, batch_prompts)
        plain_t.append(time.perf_counter() - t)
        reward._text_cache.clear()
        t = time.perf_counter()
        TextNorm(reward, sets).score(images, batch_prompts)
        tn_t.append(time.perf_counter() - t)
    return min(tn_t) / min(plain_t)


if __name__ == "__main__":
    main()
