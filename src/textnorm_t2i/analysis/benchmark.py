"""Building TIA2-Shapes: the TIA2 protocol replayed in the synthetic world.

A fixed, seeded prompt list per subset; ``samples`` images per prompt from the embedded generator;
three simulated annotators (the oracle's verdict, flipped 10% / unsure 3% of the time); rule-based
contrastive prompt sets; all written in the TIA2 file layout plus the images, so every ``tia2``
command runs on it with ``--benchmark DIR`` (or ``--benchmark shapes`` for the shipped copy).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from textnorm_t2i.errors import InputError
from textnorm_t2i.generate.load import load_generator
from textnorm_t2i.io import write_text_atomic
from textnorm_t2i.prompts.rules import rule_set
from textnorm_t2i.rundir import MARKER_NAME, mark_run_dir, prepare_run_dir, remove_entries
from textnorm_t2i.world.annotators import annotate, write_subset
from textnorm_t2i.world.grammar import SUBSETS, sample_prompts
from textnorm_t2i.world.vocab import COLORS


def build_shapes_benchmark(out_dir: str | os.PathLike, prompts_per_subset: int = 40, samples: int = 50,
                           seed: int = 0, model: str = "shapes", num_inference_steps: int = 20,
                           guidance_scale: float = 3.0, flip: float = 0.1, unsure: float = 0.03,
                           subsets: tuple[str, ...] = SUBSETS, progress: bool = True, overwrite: bool = False) -> Path:
    """Build TIA2-Shapes in ``out_dir`` (deterministic from ``seed``); returns the folder.

    The folder follows the rules of run folders: it must be empty, or (``overwrite``) hold an earlier
    benchmark build and nothing else. The benchmark is built in a hidden staging folder inside it and moved
    into place only when complete, so an interrupted build leaves no partial benchmark.

    Example:
        >>> build_shapes_benchmark("/tmp/tia2-shapes", prompts_per_subset=2, samples=4)  # doctest: +SKIP
    """
    if samples < 2 or prompts_per_subset < 1:
        raise InputError("need at least 1 prompt per subset and 2 samples per prompt")
    final = Path(out_dir)
    lock, stale = prepare_run_dir(final, kind="benchmark", overwrite=overwrite, clear=False, resumable=False)
    try:
        pipe = load_generator(model)
        mark_run_dir(final, "benchmark")
        staging = final / ".build.tmp"
        remove_entries([staging])
        _build(staging, pipe, prompts_per_subset, samples, seed, model, num_inference_steps, guidance_scale, flip,
               unsure, subsets, progress)
        remove_entries([p for p in stale if p.name not in (staging.name, MARKER_NAME)])  # the earlier build
        for entry in sorted(staging.iterdir()):
            os.replace(entry, final / entry.name)
        staging.rmdir()
    finally:
        lock.release(remove=True)
    return final


def _build(out: Path, pipe: object, prompts_per_subset: int, samples: int, seed: int, model: str,
           num_inference_steps: int, guidance_scale: float, flip: float, unsure: float, subsets: tuple[str, ...],
           progress: bool) -> None:
    from tqdm.auto import tqdm

    t0 = time.time()
    info = {"seed": seed, "prompts_per_subset": prompts_per_subset, "samples": samples, "model": str(model),
            "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "flip": flip,
            "unsure": unsure, "subsets": {}}
    for s_idx, subset in enumerate(subsets):
        prompts = sample_prompts(subset, prompts_per_subset, seed=1000 + seed)
        names, captions, images = [], [], []
        for p_idx, prompt in enumerate(tqdm(prompts, desc=f"TIA2-Shapes {subset}", disable=not progress)):
            batch = pipe([prompt] * samples, seed=seed * 100_003 + s_idx * 1009 + p_idx,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale).images
            images += batch
            captions += [prompt] * samples
            names += [f"image_{p_idx}_0_{j}.png" for j in range(samples)]
        votes = annotate(images, captions, n_annotators=3, flip=flip, unsure=unsure, seed=seed * 7 + s_idx)
        sets = {p: rule_set(p, colors=tuple(COLORS)) for p in prompts}
        write_subset(out, subset, names, captions, votes, sets, images)
        info["subsets"][subset] = {"prompts": len(prompts), "images": len(images)}
    info["seconds"] = round(time.time() - t0, 1)
    write_text_atomic(out / "benchmark.json", json.dumps(info, indent=1))
    write_text_atomic(
        out / "README.md",
        "# TIA2-Shapes\n\nBuilt by `textnorm world benchmark build` from the embedded generator; votes are "
        f"simulated annotators over the oracle judge (flip {flip}, unsure {unsure}). See benchmark.json.\n")
