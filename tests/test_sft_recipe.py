"""SFT's recipe options on tiny models: the guided loss, caption dropout and the regulariser against their
definitions; the random and oracle selections; a run that trains on a caller's pool; a run that evaluates the
training prompts too."""

from __future__ import annotations

import csv
import json
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.sft import SFTPool, select_random, sft_step_loss
from textnorm_t2i.trainers import WORLD
from tiny_models import save_tiny_shapes_pipeline, save_tiny_shapes_reward

PROMPTS = ["a red circle", "two blue squares", "a green triangle and a yellow circle"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    return {"generator": save_tiny_shapes_pipeline(root / "gen"), "reward": save_tiny_shapes_reward(root / "reward")}


@pytest.fixture(scope="module")
def unet_and_data(tiny):
    from textnorm_t2i.finetune.backend import DiffusionBackend
    from textnorm_t2i.finetune.models import load_pipeline

    backend = DiffusionBackend(load_pipeline(str(tiny["generator"])))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    return backend, x0, backend.encode(PROMPTS * 2), backend.encode([""])


def _draws(n: int, scheduler, x0_len: int, seed: int):
    """The draws sft_step_loss makes from its generator, in its order."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x0_len, (n,), generator=g)
    noise = torch.randn((n, 3, 32, 32), generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=g)
    return idx, noise, t


def test_the_guided_loss_is_the_mse_of_the_guided_prediction(unet_and_data):
    backend, x0, cond, uncond = unet_and_data
    unet, scheduler = backend.unet, backend.pipe.scheduler
    weights = torch.ones(len(x0))
    got = sft_step_loss(unet, scheduler, x0, cond, weights, 4, torch.Generator().manual_seed(3), uncond=uncond,
                        guidance=2.5)
    idx, noise, t = _draws(4, scheduler, len(x0), 3)
    xt = scheduler.add_noise(x0[idx], noise, t)
    c = unet(xt, t, encoder_hidden_states=cond[idx]).sample
    u = unet(xt, t, encoder_hidden_states=uncond.expand(4, -1, -1)).sample
    v_pred = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(x0[idx], noise, t) if v_pred else noise
    torch.testing.assert_close(got, F.mse_loss(u + 2.5 * (c - u), target), rtol=1e-5, atol=1e-6)
    # Guidance 1 is the plain conditional loss.
    plain = sft_step_loss(unet, scheduler, x0, cond, weights, 4, torch.Generator().manual_seed(3))
    one = sft_step_loss(unet, scheduler, x0, cond, weights, 4, torch.Generator().manual_seed(3), uncond=uncond,
                        guidance=1.0)
    torch.testing.assert_close(one, plain, rtol=1e-5, atol=1e-6)


def test_full_caption_dropout_trains_the_unconditional_branch(unet_and_data):
    backend, x0, cond, uncond = unet_and_data
    unet, scheduler = backend.unet, backend.pipe.scheduler
    weights = torch.ones(len(x0))
    got = sft_step_loss(unet, scheduler, x0, cond, weights, 4, torch.Generator().manual_seed(4), uncond=uncond,
                        caption_dropout=1.0)
    empty = uncond.expand(len(x0), -1, -1)
    expected = sft_step_loss(unet, scheduler, x0, empty, weights, 4, torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_regulariser_is_zero_at_the_base_model(unet_and_data):
    backend, x0, cond, uncond = unet_and_data
    unet, scheduler = backend.unet, backend.pipe.scheduler
    weights = torch.ones(len(x0))
    plain = sft_step_loss(unet, scheduler, x0, cond, weights, 4, torch.Generator().manual_seed(5), uncond=uncond,
                          guidance=2.0)
    # No adapter: the "base" is the model itself, so the regulariser adds exactly nothing.
    reg = sft_step_loss(unet, scheduler, x0, cond, weights, 4, torch.Generator().manual_seed(5), reg_coef=3.0,
                        base_off=nullcontext, uncond=uncond, guidance=2.0)
    torch.testing.assert_close(reg, plain)


def test_random_selection_keeps_a_share_of_every_prompt():
    prompts = [p for p in "abc" for _ in range(10)]
    keep = select_random(prompts, 0.2, np.random.default_rng(1))
    assert [sum(prompts[i] == p for i in keep) for p in "abc"] == [2, 2, 2]
    assert len(set(keep.tolist())) == 6
    again = select_random(prompts, 0.2, np.random.default_rng(1))
    assert keep.tolist() == again.tolist()


def _config(tiny, out, **extra):
    cfg = {"seed": 0, "generator": str(tiny["generator"]), "out": str(out), "prompts": {"list": PROMPTS},
           "reward": {"name": "shapes-clip-a", "path": str(tiny["reward"])},
           "sampling": {"steps": 2, "guidance_scale": 2.0, "eta": 1.0}, "lora": {"rank": 2, "alpha": 2},
           "samples_per_prompt": 4, "steps": 2, "train_batch_size": 2, "checkpoint_every": 2,
           "eval": {"every": 2, "prompts": PROMPTS[:2], "steps": 2, "images_per_prompt": 2, "train_prompts": 2},
           "log": {"report_to": ["csv"]}}
    cfg.update(extra)
    return cfg


@pytest.mark.slow
def test_sft_on_a_given_pool_with_an_oracle_selection_and_training_prompt_columns(tiny, tmp_path):
    from textnorm_t2i.finetune.sft import run_sft

    latents = torch.rand(6, 3, 32, 32) * 2 - 1
    pool = SFTPool(latents, [p for p in PROMPTS for _ in range(2)], np.arange(6.0), np.array([0, 1, 0, 0, 1, 1.0]))
    out = run_sft(_config(tiny, tmp_path / "run", select="aligned", guided_loss=True, caption_dropout=0.5,
                          reg_coef=0.5), progress=False, pool=pool, truth=WORLD)
    data = json.loads((out / "data.json").read_text())
    assert (data["kept"], data["gold_kept"], data["select"]) == (3, 1.0, "aligned")
    rows = list(csv.DictReader(open(out / "eval.csv")))
    assert {"train_objective", "train_gold_alignment", "train_fidelity", "fidelity"} <= set(rows[0])
    records = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert {(r["split"], r["sample"]) for r in records} == {("eval", 0), ("eval", 1), ("train", 0), ("train", 1)}
    assert len([r for r in records if r["step"] == 0]) == (2 + 2) * 2
    assert "training prompts (fresh noise)" in (out / "report.html").read_text()


@pytest.mark.slow
def test_an_oracle_selection_with_nothing_aligned_is_one_clear_error(tiny, tmp_path):
    from textnorm_t2i.finetune.sft import run_sft

    pool = SFTPool(torch.zeros(3, 3, 32, 32), PROMPTS, np.zeros(3), np.zeros(3))
    with pytest.raises(InputError, match="judged none of the generated samples aligned"):
        run_sft(_config(tiny, tmp_path / "none", select="aligned"), progress=False, pool=pool, truth=WORLD)


def _redness(images, prompts):
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


@pytest.mark.slow
def test_sft_controls_at_test_size(tiny, tmp_path):
    """The controls at test size, on a pool of half red and half green images: SFT on the reddest half makes the
    tiny model's images redder (paired, same noise, by more than 3 standard errors); the drift control (a random
    half, red and green alike) moves redness by less than a third of that."""
    from textnorm_t2i.finetune.report import _read_samples, paired_change
    from textnorm_t2i.finetune.sft import run_sft

    colours = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    latents = colours[torch.arange(24) % 2][:, :, None, None].expand(24, 3, 32, 32).contiguous()
    prompts = [p for p in PROMPTS for _ in range(8)]
    pool = SFTPool(latents, prompts, _redness((latents + 1) / 2, prompts).numpy())
    change = {}
    for select in ("reward", "random"):
        cfg = _config(tiny, tmp_path / select, select=select, top_fraction=0.5, steps=20, train_batch_size=8,
                      lr=1e-2, guided_loss=True, checkpoint_every=20,
                      eval={"every": 20, "prompts": PROMPTS, "steps": 2, "images_per_prompt": 8})
        out = run_sft(cfg, progress=False, reward=_redness, pool=pool, truth=WORLD)
        change[select] = paired_change(_read_samples(out / "samples.jsonl"), "objective", 0, 20)
    (positive, se, n), (drift, _, _) = change["reward"], change["random"]
    assert n == 24 and positive > 3 * se and abs(drift) < positive / 3, change
