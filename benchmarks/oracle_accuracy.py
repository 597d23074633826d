"""Accuracy and speed of the oracle judge on rendered scenes, clean and perturbed.

For each subset, canvas size (32, 64) and condition (clean, Gaussian noise sigma=10/255, light blur,
+-20 colour jitter per channel, all three), renders scenes of random prompts and reports:

- aligned: the rate of prompts judged aligned on scenes drawn for them;
- near misses (count +-1, colour swap, shape swap, relation flipped) judged misaligned, per kind
  (a near miss that happens to be true of the scene is skipped, by a symbolic check of the scene).

Then times the oracle alone on clean 32x32 scenes, on one thread. Target: >= 99% everywhere,
>= 500 images judged per second.

    python benchmarks/oracle_accuracy.py [--prompts 80] [-o results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

import argparse  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

from textnorm_t2i.world.check import Obj, check  # noqa: E402
from textnorm_t2i.world.grammar import near_misses, parse, sample_prompts  # noqa: E402
from textnorm_t2i.world.oracle import judge  # noqa: E402
from textnorm_t2i.world.perturb import add_noise, blur, color_jitter, perturb_all  # noqa: E402
from textnorm_t2i.world.scene import draw_scene, sample_scene  # noqa: E402

CONDITIONS = {
    "clean": lambda img, seed: img,
    "noise": lambda img, seed: add_noise(img, sigma=10 / 255, seed=seed),
    "blur": lambda img, seed: blur(img),
    "jitter": lambda img, seed: color_jitter(img, amount=20, seed=seed),
    "all": lambda img, seed: perturb_all(img, seed=seed),
}
KINDS = ("count", "color", "shape", "relation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=80, help="prompts per subset, size and condition")
    parser.add_argument("-o", "--output", help="write the results as JSON")
    args = parser.parse_args()

    rows = []
    scenes = 0
    for size in (32, 64):
        for condition, perturb in CONDITIONS.items():
            counts = {"aligned": [0, 0], **{k: [0, 0] for k in KINDS}}
            for subset in ("counting", "composition", "comprehensive"):
                for i, prompt in enumerate(sample_prompts(subset, args.prompts, seed=size)):
                    spec = parse(prompt)
                    scene = sample_scene(spec, random.Random(f"{size}:{i}:{subset}"), size)
                    image = perturb(draw_scene(scene), 1000 * size + i)
                    truth = [Obj(o.shape, o.color, o.center) for o in scene.objects]
                    scenes += 1
                    counts["aligned"][0] += judge(image, spec).aligned
                    counts["aligned"][1] += 1
                    for kind, misses in near_misses(spec).items():
                        for miss in misses:
                            if check(miss, truth)[0]:
                                continue
                            counts[kind][0] += not judge(image, miss).aligned
                            counts[kind][1] += 1
            rows.append({"size": size, "condition": condition,
                         **{k: {"correct": c, "total": n, "rate": c / n} for k, (c, n) in counts.items()}})

    spec_prompts = [p for s in ("counting", "composition", "comprehensive") for p in sample_prompts(s, 100, seed=7)]
    images = [draw_scene(sample_scene(parse(p), random.Random(i), 32)) for i, p in enumerate(spec_prompts)]
    start = time.perf_counter()
    for _ in range(3):
        for img, p in zip(images, spec_prompts):
            judge(img, p)
    per_second = 3 * len(images) / (time.perf_counter() - start)

    header = f"{'size':>4} {'condition':<9} {'aligned':>16} " + " ".join(f"{k:>16}" for k in KINDS)
    print(f"{scenes} rendered scenes (3 subsets x 2 sizes x {len(CONDITIONS)} conditions x {args.prompts} prompts)")
    print(header)
    worst = 1.0
    for r in rows:
        cells = []
        for k in ("aligned", *KINDS):
            cells.append(f"{r[k]['rate']:7.2%} ({r[k]['correct']}/{r[k]['total']})".rjust(16))
            worst = min(worst, r[k]["rate"])
        print(f"{r['size']:>4} {r['condition']:<9} " + " ".join(cells))
    print(f"oracle speed at 32x32, one thread: {per_second:.0f} images/s")
    print(f"worst rate {worst:.2%}; speed {per_second:.0f} images/s")
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, {"scenes": scenes, "rows": rows, "images_per_second": per_second})


if __name__ == "__main__":
    main()
