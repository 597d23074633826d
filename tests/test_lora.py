"""LoRA outputs in the field's layout: saved by us, loaded by diffusers' ``load_lora_weights``, by peft and by
``textnorm generate --lora`` -- the same images every way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.tiny_models import save_tiny_sd_pipeline, save_tiny_shapes_pipeline


def _randomise_lora(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _images(pipe):
    return pipe(["a red circle", "two squares"], num_inference_steps=2, guidance_scale=2.0, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def sd_lora(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    from textnorm_t2i.finetune.lora import add_lora, save_lora_folder

    root = tmp_path_factory.mktemp("sdlora")
    path = save_tiny_sd_pipeline(root / "pipe")
    pipe = StableDiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    base = _images(pipe)
    add_lora(pipe.unet, rank=2, alpha=2)
    _randomise_lora(pipe.unet)
    tuned = _images(pipe)
    folder = save_lora_folder(pipe.unet, root / "lora")
    return path, folder, base, tuned


def test_lora_folder_layout(sd_lora):
    from safetensors import safe_open

    _, folder, _, _ = sd_lora
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert "lora_adapter_metadata" in f.metadata()
    assert keys and all(k.startswith("unet.") and ".lora_" in k and ".default." not in k for k in keys)


def test_diffusers_load_lora_weights_gives_our_images(sd_lora):
    from diffusers import StableDiffusionPipeline

    path, folder, base, tuned = sd_lora
    assert not np.allclose(base, tuned, atol=1e-3)  # the adapter changes the images
    pipe = StableDiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(folder), weight_name="adapter_model.safetensors")
    np.testing.assert_allclose(_images(pipe), tuned, atol=1e-5)


def test_our_loader_and_peft_give_the_same_images(sd_lora):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from textnorm_t2i.finetune.lora import load_lora_folder

    path, folder, _, tuned = sd_lora
    assert isinstance(LoraConfig.from_pretrained(str(folder)), LoraConfig)
    pipe = StableDiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    load_lora_folder(pipe.unet, folder)
    np.testing.assert_allclose(_images(pipe), tuned, atol=1e-5)


def test_a_foreign_or_partial_folder_is_one_clear_error(sd_lora, tmp_path):
    from diffusers import StableDiffusionPipeline

    from textnorm_t2i.errors import InputError
    from textnorm_t2i.finetune.lora import load_lora_folder

    path, folder, _, _ = sd_lora
    unet = StableDiffusionPipeline.from_pretrained(path).unet
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "adapter_config.json").write_text((folder / "adapter_config.json").read_text())
    with pytest.raises(InputError, match="missing adapter_model.safetensors"):
        load_lora_folder(unet, tmp_path / "half")
    (tmp_path / "half" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="unreadable LoRA adapter"):
        load_lora_folder(unet, tmp_path / "half")


def test_generate_with_lora_uses_the_adapter(tmp_path, capsys):
    from PIL import Image

    from textnorm_t2i.cli import main
    from textnorm_t2i.finetune.lora import add_lora, save_lora_folder
    from textnorm_t2i.generate.load import load_generator

    model = save_tiny_shapes_pipeline(tmp_path / "gen")
    pipe = load_generator(model)
    add_lora(pipe.unet, rank=2, alpha=2)
    _randomise_lora(pipe.unet)
    save_lora_folder(pipe.unet, tmp_path / "lora")
    args = ["generate", "--prompt", "a red circle", "--n", "2", "--steps", "2", "--model", str(model)]
    assert main(args + ["-o", str(tmp_path / "base.png")]) == 0
    assert main(args + ["--lora", str(tmp_path / "lora"), "-o", str(tmp_path / "tuned.png")]) == 0
    base, tuned = (np.asarray(Image.open(tmp_path / n)) for n in ("base.png", "tuned.png"))
    assert base.shape == tuned.shape and not np.array_equal(base, tuned)
    from textnorm_t2i.finetune.lora import load_lora_folder
    from textnorm_t2i.generate.grid import image_grid

    again = load_generator(model)
    load_lora_folder(again.unet, tmp_path / "lora")
    direct = again(["a red circle"] * 2, seed=0, num_inference_steps=2, guidance_scale=3.0).images
    np.testing.assert_array_equal(np.asarray(image_grid(direct, rows=1, scale=4)), tuned)


def test_push_to_hub_uploads_the_folder_through_the_api_boundary(sd_lora, monkeypatch, capsys):
    """The hub API is mocked: the folder's two files are uploaded, the token is read from the environment
    and never printed; no token is a one-line error before any call."""
    import huggingface_hub

    from textnorm_t2i.cli import main

    _, folder, _, _ = sd_lora
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw["private"]))
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], sorted(p.name for p in Path(kw["folder_path"]).iterdir()),
                          kw["allow_patterns"]))

    from pathlib import Path

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert main(["push", "--lora", str(folder), "--repo-id", "me/lora"]) == 2
    assert "no token" in capsys.readouterr().err and not calls
    monkeypatch.setenv("HF_TOKEN", "hf_secret_123")
    assert main(["push", "--lora", str(folder), "--repo-id", "me/lora"]) == 0
    err = capsys.readouterr().err
    assert "hf_secret_123" not in err and "https://hub.example/me/lora" in err
    assert calls[0] == ("init", "hf_secret_123") and calls[1] == ("create", "me/lora", True)
    assert calls[2][1] == "me/lora" and set(calls[2][3]) == {"adapter_config.json", "adapter_model.safetensors"}
