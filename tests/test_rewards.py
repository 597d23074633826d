"""Reward backends on tiny local models: loading, batching, and scores equal to a hand computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from textnorm_t2i.errors import InputError
from textnorm_t2i.rewards import CallableReward, as_reward, list_rewards, load_reward, to_tensor
from tiny_models import save_tiny_blip2, save_tiny_clip

PROMPTS = ["a red circle", "two blue squares", "a photo of three cats", "a red circle"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory):
    return save_tiny_blip2(tmp_path_factory.mktemp("blip2"))


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g)


def hand_clip(model_dir, images, prompts, scale):
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    enc = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    pixel_values=(images - mean) / std)
    cos = (F.normalize(out.image_embeds, dim=-1) * F.normalize(out.text_embeds, dim=-1)).sum(-1)
    s = scale if scale is not None else model.logit_scale.exp()
    return s * cos


@pytest.mark.parametrize("name,scale", [("clip", 100.0), ("pickscore", None)])
def test_clip_family_matches_hand_computation(clip_dir, images, name, scale):
    reward = load_reward(name, str(clip_dir), batch_size=3)
    got = reward.score(images, PROMPTS)
    assert got.shape == (4,) and got.dtype == torch.float32
    torch.testing.assert_close(got, hand_clip(clip_dir, images, PROMPTS, scale), rtol=1e-5, atol=1e-4)
    # PIL input gives the same scores as the equivalent tensor.
    pil = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")) for x in images]
    quantised = to_tensor(pil)
    torch.testing.assert_close(reward.score(pil, PROMPTS), reward.score(quantised, PROMPTS))


def test_clip_text_cache_and_score_sets(clip_dir, images):
    reward = load_reward("clip", str(clip_dir))
    sets = [["a red circle", "two red circles"], ["a cat"], ["a cat", "a dog", "a red circle"], ["two dogs"]]
    got = reward.score_sets(images, sets)
    for i, ps in enumerate(sets):
        torch.testing.assert_close(got[i], reward.score(images[[i] * len(ps)], ps))
    assert set(reward._text_cache) == {p for ps in sets for p in ps}


def test_clip_gradients(clip_dir, images):
    reward = load_reward("clip", str(clip_dir))
    x = images.clone().requires_grad_(True)
    reward.score(x, PROMPTS, grad=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not reward.score(images, PROMPTS).requires_grad


@pytest.mark.parametrize("head", ["itm", "itc"])
def test_blip2_matches_hand_computation(blip2_dir, images, head):
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    reward = load_reward("blip2", str(blip2_dir), head=head, batch_size=2)
    got = reward.score(images, PROMPTS)
    model = Blip2ForImageTextRetrieval.from_pretrained(blip2_dir).eval()
    tok = AutoTokenizer.from_pretrained(blip2_dir)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    expected = []
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            enc = tok([p], return_tensors="pt")
            out = model(pixel_values=(images[i : i + 1] - mean) / std, input_ids=enc["input_ids"],
                        attention_mask=enc["attention_mask"], use_image_text_matching_head=head == "itm")
            expected.append(out.logits_per_image.softmax(-1)[0, 1] if head == "itm" else out.logits_per_image[0, 0])
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-4, atol=1e-5)
    if head == "itm":
        assert ((got > 0) & (got < 1)).all()


def test_offline_load_fails_with_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(InputError) as info:
        load_reward("clip", str(tmp_path / "missing"))
    msg = str(info.value)
    assert "\n" not in msg and "clip" in msg and "no such folder" in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as info:
        load_reward("clip", "someone/no-such-clip")
    msg = str(info.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and "hf download someone/no-such-clip" in msg


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["clip=/nonexistent/clip", "pickscore=./no/such/model", "clip=openai/not-cached"])
def test_cli_missing_model_is_one_line_within_seconds(spec):
    """No hub retries: a missing folder, or an uncached id with HF_HUB_OFFLINE=1, fails in one line, fast."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).parent / "textnorm"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.time()
    done = subprocess.run([str(exe), "diagnose", "--reward", spec, "--subset", "counting"], env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.time() - t0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert ("no such folder" in lines[0]) if "=/" in spec or "=./" in spec else ("hf download" in lines[0])
    assert elapsed < 30, elapsed  # generous for a loaded CI machine (parallel workers); about 3 s here alone


def test_optional_packages_and_pickle_opt_in():
    for name in ("imagereward", "hpsv2"):
        with pytest.raises(InputError, match="pip install|allow_pickle"):
            load_reward(name)


def test_registry_lists_backends():
    assert {"clip", "pickscore", "blip2", "imagereward", "hpsv2"} <= {e.name for e in list_rewards()}
    with pytest.raises(InputError, match="unknown reward"):
        load_reward("nope")


def test_callable_and_validation():
    r = as_reward(lambda images, prompts: [float(len(p)) for p in prompts])
    assert isinstance(r, CallableReward)
    assert r.score(torch.zeros(2, 3, 8, 8), ["ab", "c"]).tolist() == [2.0, 1.0]
    with pytest.raises(InputError, match="2 images but 1 prompts"):
        r.score(torch.zeros(2, 3, 8, 8), ["ab"])
    with pytest.raises(InputError, match="N x 3 x H x W"):
        r.score(torch.zeros(2, 8, 8), ["a", "b"])
    with pytest.raises(InputError, match="not a reward"):
        as_reward(3)


def test_every_reward_is_callable_and_validates_its_input(tmp_path):
    import textnorm_t2i
    from textnorm_t2i.calibrate.ensemble import Ensemble
    from textnorm_t2i.calibrate.textnorm import TextNorm
    from textnorm_t2i.errors import InputError

    clip_a = textnorm_t2i.load_reward("shapes-clip-a")
    x = torch.rand(2, 3, 32, 32)
    prompts = ["a red circle", "two blue squares"]
    torch.testing.assert_close(clip_a(x, prompts), clip_a.score(x, prompts))
    tn = TextNorm(clip_a, generator=lambda p: ["a green triangle"])
    ens = Ensemble([clip_a, tn])
    for reward in (tn, ens, CallableReward(lambda i, p: [0.0] * len(p))):
        torch.testing.assert_close(reward(x, prompts), reward.score(x, prompts))
        with pytest.raises(InputError, match="not a single string"):
            reward.score(x[:1], "a red circle")
        with pytest.raises(InputError, match="one prompt per image"):
            reward(x, prompts[:1])
    # image paths are accepted and read as RGB
    from PIL import Image

    paths = []
    for i, img in enumerate(x):
        path = tmp_path / f"{i}.png"
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path)
        paths.append(path)
    quantised = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)
                             for p in paths])
    torch.testing.assert_close(clip_a(paths, prompts), clip_a(quantised, prompts))
    with pytest.raises(InputError, match="image not found"):
        clip_a([tmp_path / "none.png"], ["a red circle"])


def test_one_rule_vocabulary_per_reward():
    """The CLI, fine-tuning and the factory give a prompt the same contrastive set."""
    from textnorm_t2i.finetune.config import load_finetune_config
    from textnorm_t2i.objectives.factory import build_reward, build_views
    from textnorm_t2i.rewards.spec import RewardSpec

    cli = build_reward(RewardSpec.from_cli("shapes-clip-a", textnorm=True))
    _, _, finetune = build_views(load_finetune_config("rl", None, ["reward.textnorm=true"]).reward)
    api = build_reward({"name": "shapes-clip-a", "textnorm": True})
    for prompt in ("two red circles", "a blue square to the left of a yellow triangle"):
        assert cli.candidates(prompt) == finetune.candidates(prompt) == api.candidates(prompt)
    assert all("purple" not in p for p in cli.candidates("two red circles"))  # the world's colours only


@pytest.mark.parametrize("name", ["shapes-clip-a", "shapes-perceive-clean"])
def test_score_matrix_equals_pairwise_scores(name):
    """The M x N matrix mode (embeddings reused for dual encoders) equals scoring each pair on its own."""
    import numpy as np

    from textnorm_t2i.rewards.registry import load_reward
    from textnorm_t2i.world.scene import render

    reward = load_reward(name)
    prompts = ["two red circles", "a blue square", "three green triangles", "a red circle above a blue square"]
    images = [render(p, seed=i) for i, p in enumerate(prompts[:3])]
    matrix = reward.score_matrix(images, prompts)
    assert matrix.shape == (3, 4)
    pairwise = np.array([[float(reward.score([img], [p])[0]) for p in prompts] for img in images])
    np.testing.assert_allclose(matrix.numpy(), pairwise, rtol=1e-5, atol=1e-5)
    paths = []
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    for i, img in enumerate(images):
        img.save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    np.testing.assert_allclose(reward.score_matrix(paths, prompts).numpy(), pairwise, rtol=1e-5, atol=1e-5)
