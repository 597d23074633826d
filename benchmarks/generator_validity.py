"""Setup validity of the embedded generator: its aligned fraction per subset, judged by the oracle.

Samples ``--samples`` images for each of ``--prompts`` prompts per subset (prompt strings drawn with
a seed the training data never used; the world has few distinct scenes per subset, so "held out"
means unseen phrasings and noise, not unseen scenes) and reports the fraction the oracle judges
aligned. Target: between 20% and 80% on counting and on composition. Also writes a sample grid.

    python benchmarks/generator_validity.py [--prompts 100] [--samples 8] [--grid docs/generator_samples.png]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from textnorm_t2i.generate.grid import image_grid
from textnorm_t2i.generate.load import load_generator
from textnorm_t2i.world.grammar import SUBSETS, sample_spec
from textnorm_t2i.world.oracle import judge


def held_out_prompts(subset: str, n: int, seed: int = 424242) -> list[str]:
    rng = random.Random(f"validity:{subset}:{seed}")
    out: dict[str, None] = {}
    for _ in range(100 * n):
        if len(out) == n:
            break
        out[sample_spec(subset, rng).to_prompt()] = None
    return list(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--grid", default=None, help="write a sample grid (PNG) here")
    parser.add_argument("-o", "--output", help="write the results as JSON")
    args = parser.parse_args()
    pipe = load_generator(args.model)
    results, grid_rows, labels = {}, [], []
    t0 = time.time()
    for s_idx, subset in enumerate(SUBSETS):
        prompts = held_out_prompts(subset, args.prompts)
        batch = [p for p in prompts for _ in range(args.samples)]
        images = pipe(batch, seed=777 + s_idx, num_inference_steps=args.steps).images
        aligned = np.array([judge(img, p).aligned for img, p in zip(images, batch)])
        results[subset] = {"prompts": len(prompts), "samples": len(batch), "aligned_fraction": float(aligned.mean())}
        print(f"{subset:<14} prompts {len(prompts):>4}  samples {len(batch):>5}  aligned {aligned.mean():6.1%}",
              flush=True)
        for p_idx in range(min(4, len(prompts))):  # grid rows: up to 4 prompts per subset
            grid_rows += images[p_idx * args.samples:(p_idx + 1) * args.samples]
            labels.append(prompts[p_idx])
    print(f"generated and judged {sum(r['samples'] for r in results.values())} images in {time.time() - t0:.0f} s")
    if args.grid:
        image_grid(grid_rows, rows=len(labels), scale=3, labels=labels).save(args.grid)
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
