"""The embedded generator: pipeline round trip, trainer resume, `textnorm generate`, the shipped model."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from textnorm_t2i.cli import main
from textnorm_t2i.generate.config import GeneratorTrainConfig
from textnorm_t2i.generate.load import load_generator
from textnorm_t2i.generate.pipeline import ShapesPipeline
from textnorm_t2i.generate.train import make_batch, train_generator
from textnorm_t2i.world.grammar import parse
from tiny_models import save_tiny_shapes_pipeline

TINY = {"block_out_channels": [8, 16, 16], "text_hidden": 16, "attention_head_dim": 4}


def test_pipeline_round_trips_through_safetensors(tmp_path):
    path = save_tiny_shapes_pipeline(tmp_path / "pipe", seed=3)
    assert list(path.rglob("*.safetensors")) and not list(path.rglob("*.bin"))
    a = ShapesPipeline.from_pretrained(path)
    a.save_pretrained(tmp_path / "again")
    b = ShapesPipeline.from_pretrained(tmp_path / "again")
    prompts = ["a red circle", "two blue squares and a green triangle"]
    x = a(prompts, num_inference_steps=3, seed=5, output_type="pt").images
    y = b(prompts, num_inference_steps=3, seed=5, output_type="pt").images
    assert x.shape == (2, 3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(x, y)
    assert not torch.equal(x, a(prompts, num_inference_steps=3, seed=6, output_type="pt").images)


def test_training_batches_are_a_pure_function_of_seed_and_step():
    cfg = GeneratorTrainConfig(subset_weights={"counting": 0.5, "composition": 0.5}, caption_dropout=0.1)
    c1, x1 = make_batch(0, 7, 16, cfg)
    c2, x2 = make_batch(0, 7, 16, cfg)
    c3, _ = make_batch(0, 8, 16, cfg)
    assert c1 == c2 and torch.equal(x1, x2) and c1 != c3
    assert x1.shape == (16, 3, 32, 32) and float(x1.min()) >= -1.0 and float(x1.max()) <= 1.0
    for caption in c1:  # every caption is empty (dropped for CFG) or a prompt the world's grammar reads
        if caption:
            parse(caption)


@pytest.mark.slow
def test_trainer_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = {"seed": 1, "steps": 4, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 2, "log_every": 1,
           "sample_prompts": ["a red circle", "two squares"], "model": TINY}
    whole = train_generator(cfg, tmp_path / "whole", progress=False)
    train_generator({**cfg, "steps": 2}, tmp_path / "parts", progress=False)
    parts = train_generator(cfg, tmp_path / "parts", resume=True, progress=False)
    a = load_file(whole / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(parts / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "parts" / "checkpoint-2" / "samples.png").exists()
    with (tmp_path / "parts" / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)  # the clock carries over the resume
    ShapesPipeline.from_pretrained(parts)  # the final EMA pipeline loads
    from textnorm_t2i.rundir import clearable_entries

    assert clearable_entries(tmp_path / "parts", "generator")  # all it wrote is declared (--overwrite may clear it)


def test_generate_cli_grid_and_folder(tmp_path, capsys):
    pipe = save_tiny_shapes_pipeline(tmp_path / "pipe")
    grid = tmp_path / "grid.png"
    assert main(["generate", "--model", str(pipe), "--prompt", "two red circles", "--n", "4", "--steps", "2",
                 "-o", str(grid)]) == 0
    assert Image.open(grid).size[0] > 32
    folder = tmp_path / "samples"
    assert main(["generate", "--model", str(pipe), "--prompt", "two red circles", "--n", "3", "--steps", "2",
                 "--seed", "4", "-o", str(folder)]) == 0
    files = sorted(folder.glob("*.png"))
    assert len(files) == 3 and all(Image.open(f).size == (32, 32) for f in files)
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "a circle", "-o", str(tmp_path / "x.png")
                 ]) == 2
    assert "model_index.json" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_shipped_generator_loads_by_name_and_draws_scenes():
    pipe = load_generator("shapes")
    images = pipe(["a red circle"] * 2, num_inference_steps=10, seed=0, output_type="pt").images
    assert images.shape == (2, 3, 32, 32)
    # Scenes are mostly black background with some saturated pixels, like the rendered world.
    arr = images.numpy()
    chroma = arr.max(axis=1) - arr.min(axis=1)
    assert 0.01 < float(np.mean(chroma > 0.3)) < 0.5
