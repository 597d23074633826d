"""The lean UNet forward against diffusers' own forward (the independent reference), and its fallbacks."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from textnorm_t2i.allocator import keep_freed_memory
from textnorm_t2i.finetune.lora import add_lora
from textnorm_t2i.generate import unet_forward
from textnorm_t2i.generate.pipeline import build_pipeline
from textnorm_t2i.generate.unet_forward import guided_output, reference_forward, supported, unet_output

# Attention runs as explicit matmuls up to a size and through scaled_dot_product_attention beyond it: each test
# that compares with diffusers runs with every attention call on one path, then on the other.
ATTENTION_PATHS = {"matmuls": 10**12, "sdpa": 0}


def embedded_unet() -> UNet2DConditionModel:
    """The package's own architecture, small."""
    return build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16, "attention_head_dim": 4}).unet


def sd_style_unet(**over) -> UNet2DConditionModel:
    """A Stable-Diffusion-like layout: latent channels, attention at the first level too, two layers per block."""
    torch.manual_seed(1)
    cfg = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=8,
               norm_num_groups=8)
    return UNet2DConditionModel(**{**cfg, **over})


UNETS = {"embedded": embedded_unet, "sd-style": sd_style_unet,
         "linear-projection": lambda: sd_style_unet(use_linear_projection=True)}


def inputs(unet, batch: int, per_sample_t: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = torch.randn(batch, unet.config.in_channels, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g) if per_sample_t else torch.tensor(637)
    ctx = torch.randn(batch, 7, unet.config.cross_attention_dim, generator=g)
    return x, t, ctx


def randomise_lora(unet, seed: int = 3) -> None:
    """LoRA's B matrices start at zero (adapted == base); give them values so the adapters matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def reference(unet, x, t, ctx):
    return unet(x, t, encoder_hidden_states=ctx).sample


@pytest.mark.parametrize("name", sorted(UNETS))
@pytest.mark.parametrize("per_sample_t", [False, True])
@pytest.mark.parametrize("attention", sorted(ATTENTION_PATHS))
def test_lean_forward_equals_diffusers_without_gradients(name, per_sample_t, attention, monkeypatch):
    monkeypatch.setattr(unet_forward, "_SMALL_ATTENTION", ATTENTION_PATHS[attention])
    unet = UNETS[name]().eval()
    assert supported(unet)
    x, t, ctx = inputs(unet, 5, per_sample_t)
    with torch.no_grad():
        expected = reference(unet, x, t, ctx)
        got = unet_output(unet, x, t, ctx)
    with torch.inference_mode():
        got_inference = unet_output(unet, x, t, ctx)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_inference, expected, rtol=1e-4, atol=1e-5)
    assert not torch.equal(x, torch.zeros_like(x))  # inputs untouched by the in-place steps
    torch.testing.assert_close(x, inputs(unet, 5, per_sample_t)[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["embedded", "sd-style"])
@pytest.mark.parametrize("attention", sorted(ATTENTION_PATHS))
def test_lean_forward_gradients_equal_diffusers_with_lora(name, attention, monkeypatch):
    monkeypatch.setattr(unet_forward, "_SMALL_ATTENTION", ATTENTION_PATHS[attention])
    unet = UNETS[name]()
    params = add_lora(unet, rank=2)
    randomise_lora(unet)
    unet.train()
    x, t, ctx = inputs(unet, 3, per_sample_t=True)
    x = x.requires_grad_(True)
    weight = torch.randn(inputs(unet, 3, True)[0].shape, generator=torch.Generator().manual_seed(9))

    def grads(fn):
        out = fn()
        return (out, *torch.autograd.grad((out * weight).sum(), [x, *params]))

    expected = grads(lambda: reference(unet, x, t, ctx))
    got = grads(lambda: unet_output(unet, x, t, ctx))
    assert len(got) == len(expected) > 2
    for g, e in zip(got, expected):
        # Gradients of LoRA matrices are sums over every pixel: compare them as vectors (relative norm), since
        # summing in another order (another layout, another thread count) moves single coordinates by more than
        # an elementwise tolerance allows; a wrong formula is off by O(1), float rounding by about 1e-5.
        assert float((g - e).detach().norm()) <= 1e-4 * float(e.detach().norm()) + 1e-7, (g - e).abs().max()


def test_lora_adapters_switch_off_on_the_lean_path():
    unet = embedded_unet()
    add_lora(unet, rank=2)
    randomise_lora(unet)
    unet.eval()
    x, t, ctx = inputs(unet, 4, per_sample_t=False)
    with torch.no_grad():
        adapted = unet_output(unet, x, t, ctx)
        unet.disable_adapters()
        base = unet_output(unet, x, t, ctx)
        base_reference = reference(unet, x, t, ctx)
        unet.enable_adapters()
    torch.testing.assert_close(base, base_reference, rtol=1e-4, atol=1e-5)
    assert (adapted - base).abs().max() > 1e-3  # the adapters change the output, and switching them off works


def test_guided_output_equals_two_reference_calls():
    unet = embedded_unet().eval()
    x, t, cond = inputs(unet, 3, per_sample_t=False)
    uncond = torch.zeros_like(cond)
    with torch.no_grad():
        u, c = reference(unet, x, t, uncond), reference(unet, x, t, cond)
        got = guided_output(unet, x, t, cond, uncond, 3.0)
        plain = guided_output(unet, x, t, cond, uncond, 1.0)
    torch.testing.assert_close(got, u + 3.0 * (c - u), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["embedded", "sd-style"])
@pytest.mark.parametrize("per_sample_t", [False, True])
def test_guided_output_shares_the_text_free_layers_and_keeps_gradients(name, per_sample_t):
    # The lean path runs the layers before the first cross-attention once for both branches; diffusers' forward
    # on the stacked batch (reference_forward) is the reference, for outputs and for gradients to x and to LoRA.
    unet = UNETS[name]()
    params = add_lora(unet, rank=2)
    randomise_lora(unet)
    unet.train()
    x, t, cond = inputs(unet, 3, per_sample_t)
    x = x.requires_grad_(True)
    uncond = torch.randn(cond.shape, generator=torch.Generator().manual_seed(5))
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))

    def grads():
        out = guided_output(unet, x, t, cond, uncond, 3.0)
        return (out, *torch.autograd.grad((out * weight).sum(), [x, *params]))

    with reference_forward():
        expected = grads()
    got = grads()
    for g, e in zip(got, expected):
        assert float((g - e).detach().norm()) <= 1e-4 * float(e.detach().norm()) + 1e-7, (g - e).abs().max()
    with torch.inference_mode():
        fast = guided_output(unet, x.detach(), t, cond, uncond, 3.0)
    torch.testing.assert_close(fast, expected[0].detach(), rtol=1e-4, atol=1e-5)


def test_what_the_lean_path_does_not_cover_runs_diffusers_forward_exactly():
    freeu = sd_style_unet()
    freeu.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    assert not supported(freeu)
    checkpointed = sd_style_unet()
    checkpointed.enable_gradient_checkpointing()
    assert not supported(checkpointed)
    odd = embedded_unet().eval()
    x, t, ctx = inputs(odd, 2, per_sample_t=False)
    with torch.no_grad():
        for unet in (freeu, checkpointed):
            xs, ts, cs = inputs(unet, 2, per_sample_t=False)
            assert torch.equal(unet_output(unet, xs, ts, cs), reference(unet, xs, ts, cs))
        x_odd = x[..., :30, :30]  # not a multiple of 2 ** upsamplers: diffusers passes explicit sizes
        assert torch.equal(unet_output(odd, x_odd, t, ctx), reference(odd, x_odd, t, ctx))
        with reference_forward():
            assert torch.equal(unet_output(odd, x, t, ctx), reference(odd, x, t, ctx))


def test_keep_freed_memory_is_idempotent_and_changes_no_result():
    unet = embedded_unet().eval()
    x, t, ctx = inputs(unet, 2, per_sample_t=False)
    with torch.no_grad():
        before = unet_output(unet, x, t, ctx)
        first = keep_freed_memory()
        assert keep_freed_memory() is first and isinstance(first, bool)
        assert torch.equal(unet_output(unet, x, t, ctx), before)


def test_folded_lora_weights_follow_every_change_of_the_adapter():
    """Without autograd the folded weights are cached; an optimiser step, a load or a scale change must show."""
    unet = embedded_unet()
    params = add_lora(unet, rank=2)
    randomise_lora(unet)
    unet.eval()
    x, t, ctx = inputs(unet, 2, per_sample_t=False)

    def check():
        with torch.inference_mode():
            got = unet_output(unet, x, t, ctx)
            expected = reference(unet, x, t, ctx)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        return got

    first = check()
    optimizer = torch.optim.SGD(params, lr=0.5)
    unet.train()
    unet_output(unet, x, t, ctx).square().mean().backward()
    optimizer.step()
    unet.eval()
    second = check()
    assert (second - first).abs().max() > 1e-4
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    with torch.no_grad():
        for p in params:
            p.mul_(0.0)
    check()
    unet.load_state_dict(state)
    torch.testing.assert_close(check(), second, rtol=0, atol=0)
    for m in unet.modules():
        if hasattr(m, "scaling"):
            m.scale_layer(3.0)
    assert (check() - second).abs().max() > 1e-4
    # Another adapter, then a DoRA one (which is not folded: peft's forward runs it): the per-layer plan follows.
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=2, init_lora_weights="gaussian", target_modules=["to_q", "conv1"]), "second")
    unet.set_adapter("second")
    randomise_lora(unet)
    third = check()
    assert (third - second).abs().max() > 1e-4
    unet.add_adapter(LoraConfig(r=2, init_lora_weights="gaussian", target_modules=["to_q"], use_dora=True), "dora")
    unet.set_adapter("dora")
    randomise_lora(unet)
    assert (check() - third).abs().max() > 1e-6
