"""One call site for the generator's UNet, with a lean forward of diffusers' ``UNet2DConditionModel``.

Every sampler and trainer here calls :func:`unet_output` rather than ``unet(...).sample``. For the UNets this
package builds (ResNet blocks, cross-attention transformer blocks with GEGLU feed-forward, nearest-neighbour
upsampling; see :func:`supported`) it runs the same computation as diffusers' forward through the same modules
(so LoRA layers injected by peft, ``disable_adapters`` and autograd work unchanged) but without the per-call
bookkeeping that costs a small UNet on a CPU much of its time:

- the timestep embedding is computed once when every sample shares the timestep (sampling), and its SiLU once
  for all ResNet blocks rather than once per block;
- with classifier-free guidance (:func:`guided_output`) both branches see the same sample: the layers before the
  first cross-attention (for the embedded UNet, its two outer levels) run once, on half the batch;
- attention over a few dozen tokens runs as two batched matmuls and a softmax, transposed so that the matmuls'
  small dimension (the head's channels) comes first (faster here than ``scaled_dot_product_attention``'s CPU
  kernel), longer attention calls ``scaled_dot_product_attention``
  directly (diffusers' ``Attention.forward`` inspects its processor's signature on every call);
- channels are concatenated through the channels-last tensors' (batch, H, W, C) views;
- without autograd, activations and residual additions run in place on tensors nothing else holds, so fewer
  large buffers are allocated and touched;
- divisions by scale factors of 1 are skipped.

The results equal diffusers' forward within float rounding (``tests/test_unet_forward.py`` compares them, with
and without LoRA, with gradients, on several configurations). Anything else (another block type, FreeU, diffusers'
own gradient checkpointing, an attention mask) goes through diffusers' forward, as does everything inside
:func:`reference_forward` (the benchmark's "today" path).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

_STATE = threading.local()

# Attention with at most this many query x key pairs per head runs as explicit matmuls (the score matrices are
# small); longer sequences keep scaled_dot_product_attention, which never holds them whole.
_SMALL_ATTENTION = 64 * 64

_DOWN = {"DownBlock2D", "CrossAttnDownBlock2D"}
_UP = {"UpBlock2D", "CrossAttnUpBlock2D"}


@contextlib.contextmanager
def reference_forward() -> Iterator[None]:
    """Within this context :func:`unet_output` calls diffusers' own forward (to compare or to time it).

    Example:
        >>> with reference_forward():
        ...     pass
    """
    before = getattr(_STATE, "reference", False)
    _STATE.reference = True
    try:
        yield
    finally:
        _STATE.reference = before


def unet_output(unet: Any, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor
                ) -> torch.Tensor:
    """The UNet's prediction for ``sample`` at ``timestep`` (a scalar or one per sample) given the text states.

    Example:
        >>> from textnorm_t2i.generate.pipeline import build_pipeline
        >>> unet = build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16}).unet
        >>> unet_output(unet, torch.zeros(2, 3, 32, 32), torch.tensor(500), torch.zeros(2, 16, 16)).shape
        torch.Size([2, 3, 32, 32])
    """
    if not _lean(unet, sample):
        return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
    return _forward(unet, sample, timestep, encoder_hidden_states)


def _lean(unet: Any, sample: torch.Tensor) -> bool:
    return not getattr(_STATE, "reference", False) and supported(unet) and _fits(unet, sample)


def guided_output(unet: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                  guidance_scale: float) -> torch.Tensor:
    """The prediction with classifier-free guidance against ``uncond`` (one batched UNet call); ``t`` is a
    scalar or holds one timestep per sample.

    Example:
        >>> from textnorm_t2i.generate.pipeline import build_pipeline
        >>> unet = build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16}).unet
        >>> c = torch.zeros(2, 16, 16)
        >>> guided_output(unet, torch.zeros(2, 3, 32, 32), torch.tensor(500), c, c, 3.0).shape
        torch.Size([2, 3, 32, 32])
    """
    if guidance_scale == 1.0:
        return unet_output(unet, x, t, cond)
    ctx = torch.cat([uncond, cond])
    if _lean(unet, x):
        # Both branches see the same sample and timestep: the layers before the first cross-attention run once.
        out = _forward(unet, x, t, ctx, copies=2)
    else:
        out = unet(torch.cat([x, x]), torch.cat([t, t]) if t.ndim else t, encoder_hidden_states=ctx).sample
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


def supported(unet: Any) -> bool:
    """Whether :func:`unet_output` runs ``unet`` through the lean forward (checked once per model, then cached)."""
    cached = unet.__dict__.get("_textnorm_lean_forward")
    if cached is None:
        # diffusers' own gradient checkpointing, switched on and off on the modules that have the flag, checkpoints
        # inside its forward: those modules are listed once and asked on every call.
        flagged = [m for m in unet.modules() if hasattr(m, "gradient_checkpointing")]
        cached = (_check(unet), flagged)
        unet.__dict__["_textnorm_lean_forward"] = cached
    ok, flagged = cached
    return ok and not any(m.gradient_checkpointing for m in flagged)


def _check(unet: Any) -> bool:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if type(unet) is not UNet2DConditionModel:
        return False
    c = unet.config
    if (c.center_input_sample or c.class_embed_type or c.addition_embed_type or c.encoder_hid_dim is not None
            or c.time_embedding_type != "positional" or c.time_cond_proj_dim is not None
            or c.mid_block_type != "UNetMidBlock2DCrossAttn" or c.resnet_time_scale_shift != "default"
            or any(getattr(unet, name, None) is not None
                   for name in ("time_embed_act", "class_embedding", "add_embedding", "encoder_hid_proj"))
            or getattr(unet.time_embedding, "cond_proj", None) is not None
            or getattr(unet.time_embedding, "post_act", None) is not None
            or not isinstance(unet.time_embedding.act, torch.nn.SiLU) or not isinstance(unet.conv_act, torch.nn.SiLU)
            or unet.conv_norm_out is None):
        return False
    if any(type(b).__name__ not in _DOWN for b in unet.down_blocks) or any(
            type(b).__name__ not in _UP for b in unet.up_blocks):
        return False
    if any(getattr(b, name, None) is not None for b in unet.up_blocks for name in ("s1", "s2", "b1", "b2")):
        return False  # FreeU
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        for r in block.resnets:
            if (type(r).__name__ != "ResnetBlock2D" or r.upsample is not None or r.downsample is not None
                    or r.skip_time_act or r.time_embedding_norm != "default" or r.time_emb_proj is None
                    or not isinstance(r.nonlinearity, torch.nn.SiLU)):
                return False
        for tr in getattr(block, "attentions", None) or []:
            if type(tr).__name__ != "Transformer2DModel" or not tr.is_input_continuous:
                return False
            for blk in tr.transformer_blocks:
                if (type(blk).__name__ != "BasicTransformerBlock" or blk.norm_type != "layer_norm"
                        or blk.only_cross_attention or blk.pos_embed is not None or blk.attn2 is None
                        or blk._chunk_size is not None or type(blk.ff.net[0]).__name__ != "GEGLU"):
                    return False
                for a in (blk.attn1, blk.attn2):
                    if (type(a.processor) not in (AttnProcessor, AttnProcessor2_0) or a.spatial_norm is not None
                            or a.group_norm is not None or a.norm_cross is not None or a.norm_q is not None
                            or a.norm_k is not None or a.residual_connection or a.rescale_output_factor != 1.0
                            or a.scale != (a.inner_dim // a.heads) ** -0.5):
                        return False
        for sampler in getattr(block, "downsamplers", None) or []:
            if type(sampler).__name__ != "Downsample2D" or sampler.norm is not None or not sampler.use_conv:
                return False
        for sampler in getattr(block, "upsamplers", None) or []:
            if (type(sampler).__name__ != "Upsample2D" or sampler.norm is not None or sampler.use_conv_transpose
                    or not sampler.interpolate or not sampler.use_conv or sampler.name != "conv"):
                return False
    # Norms and dropouts are called as functions: a hook on one would be skipped.
    if any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules()
           if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.Dropout))):
        return False
    return True


def _fits(unet: Any, sample: torch.Tensor) -> bool:
    # diffusers passes explicit upsampling sizes when the image is not a multiple of 2 ** upsamplers.
    factor = 2 ** sum(1 for b in unet.up_blocks if getattr(b, "upsamplers", None))
    return sample.ndim == 4 and all(s % factor == 0 for s in sample.shape[-2:])


def _forward(unet: Any, x: torch.Tensor, timestep: torch.Tensor | int, ctx: torch.Tensor, copies: int = 1
             ) -> torch.Tensor:
    """The UNet on ``copies`` stacked copies of ``x`` (and of its timesteps) against ``ctx``, which holds
    ``copies * len(x)`` rows: nothing before the first cross-attention depends on ``ctx``, so that part runs on
    ``x`` once and its activations are copied where the text first enters (exact: each row's arithmetic is the
    same as in a stacked batch)."""
    inplace = not torch.is_grad_enabled()
    t = torch.as_tensor(timestep, device=x.device)
    t = t.reshape(-1)
    # One embedding row when all samples share the timestep; broadcasting it is what diffusers' expand does.
    if t.numel() > 1 and not bool((t == t[0]).all()):
        t = t.expand(x.shape[0])
    else:
        t = t[:1]
    emb = unet.time_embedding(unet.time_proj(t).to(dtype=x.dtype))
    emb_act = F.silu(emb)

    # Channels-last activations: oneDNN's convolutions run faster on them and need no reorder per call (the
    # weights stay as they are); the output is returned in the usual layout.
    h = _layer(unet.conv_in, x.contiguous(memory_format=torch.channels_last))
    skips = [h]

    def text_enters(h: torch.Tensor) -> torch.Tensor:
        nonlocal skips, emb_act
        if h.shape[0] != ctx.shape[0]:
            skips = [_repeat_rows(s, copies) for s in skips]
            emb_act = _repeat_rows(emb_act, copies) if emb_act.shape[0] > 1 else emb_act
            h = _repeat_rows(h, copies)
        return h

    for block in unet.down_blocks:
        attentions = getattr(block, "attentions", None)
        for i, resnet in enumerate(block.resnets):
            h = _resnet(resnet, h, emb_act, inplace)
            if attentions is not None:
                h = _transformer(attentions[i], text_enters(h), ctx, inplace)
            skips.append(h)
        for sampler in block.downsamplers or []:
            h = _layer(sampler.conv, h if sampler.padding else F.pad(h, (0, 1, 0, 1)))
            skips.append(h)

    mid = unet.mid_block
    h = _resnet(mid.resnets[0], h, emb_act, inplace)
    for tr, resnet in zip(mid.attentions, mid.resnets[1:]):
        h = _transformer(tr, text_enters(h), ctx, inplace)
        h = _resnet(resnet, h, emb_act, inplace)

    for block in unet.up_blocks:
        attentions = getattr(block, "attentions", None)
        for i, resnet in enumerate(block.resnets):
            h = _resnet(resnet, _cat_channels(h, skips.pop()), emb_act, inplace)
            if attentions is not None:
                h = _transformer(attentions[i], text_enters(h), ctx, inplace)
        for sampler in block.upsamplers or []:
            h = _layer(sampler.conv, F.interpolate(h, scale_factor=2.0, mode="nearest"))

    h = unet.conv_norm_out(h)
    h = F.silu(h, inplace=inplace)
    return text_enters(_layer(unet.conv_out, h)).contiguous()


def _repeat_rows(y: torch.Tensor, copies: int) -> torch.Tensor:
    """``torch.cat([y] * copies)``, keeping a channels-last tensor channels-last."""
    if copies == 1:
        return y
    if y.ndim == 4 and y.is_contiguous(memory_format=torch.channels_last):
        return torch.cat([y.permute(0, 2, 3, 1)] * copies).permute(0, 3, 1, 2)
    return torch.cat([y] * copies)


def _resnet(r: Any, x: torch.Tensor, emb_act: torch.Tensor, inplace: bool) -> torch.Tensor:
    sub = r._modules  # submodules by name, without nn.Module.__getattr__ on every access
    h = F.silu(_norm(sub["norm1"], x), inplace=inplace)
    h = _layer(sub["conv1"], h)
    temb = _layer(sub["time_emb_proj"], emb_act)[:, :, None, None]
    h = h.add_(temb) if inplace else h + temb
    h = F.silu(_norm(sub["norm2"], h), inplace=inplace)
    h = _dropout(sub["dropout"], h)
    h = _layer(sub["conv2"], h)
    shortcut = sub.get("conv_shortcut")
    shortcut = _layer(shortcut, x) if shortcut is not None else x
    h = h.add_(shortcut) if inplace else shortcut + h
    if r.output_scale_factor != 1.0:
        h = h / r.output_scale_factor
    return h


def _transformer(tr: Any, x: torch.Tensor, ctx: torch.Tensor, inplace: bool) -> torch.Tensor:
    sub = tr._modules
    batch, _, height, width = x.shape
    h = _norm(sub["norm"], x)
    if not tr.use_linear_projection:
        h = _layer(sub["proj_in"], h)
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, inner)
    else:
        inner = h.shape[1]
        h = _layer(sub["proj_in"], h.permute(0, 2, 3, 1).reshape(batch, height * width, inner))
    for blk in sub["transformer_blocks"]:
        b = blk._modules
        h = _add(_attention(b["attn1"], _norm(b["norm1"], h), None), h, inplace)
        h = _add(_attention(b["attn2"], _norm(b["norm2"], h), ctx), h, inplace)
        h = _add(_feed_forward(b["ff"], _norm(b["norm3"], h)), h, inplace)
    if not tr.use_linear_projection:
        # (batch, H, W, C) viewed as NCHW is a channels-last tensor: no copy (diffusers makes it contiguous)
        h = _layer(sub["proj_out"], h.reshape(batch, height, width, inner).permute(0, 3, 1, 2))
    else:
        h = _layer(sub["proj_out"], h).reshape(batch, height, width, inner).permute(0, 3, 1, 2)
    return _add(h, x, inplace)


def _add(fresh: torch.Tensor, other: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``fresh + other``, in place on ``fresh`` (a new tensor nothing else holds) when autograd is off."""
    return fresh.add_(other) if inplace else fresh + other


def _norm(m: Any, x: torch.Tensor) -> torch.Tensor:
    """A GroupNorm or LayerNorm module's function, called directly (no module-call overhead; :func:`_check`
    makes sure no hook is attached to one)."""
    if type(m) is torch.nn.GroupNorm:
        return F.group_norm(x, m.num_groups, m.weight, m.bias, m.eps)
    if type(m) is torch.nn.LayerNorm:
        return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)
    return m(x)


def _dropout(m: Any, x: torch.Tensor) -> torch.Tensor:
    """Dropout with p = 0 is the identity (diffusers' default everywhere): skip the call."""
    return x if type(m) is torch.nn.Dropout and m.p == 0 else m(x)


def _attention(a: Any, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
    sub = a._modules
    batch = x.shape[0]
    src = x if ctx is None else ctx
    q, k, v = _layer(sub["to_q"], x), _layer(sub["to_k"], src), _layer(sub["to_v"], src)
    heads = a.heads
    head_dim = k.shape[-1] // heads
    if q.shape[1] * k.shape[1] > _SMALL_ATTENTION:
        q, k, v = (y.view(batch, -1, heads, head_dim).transpose(1, 2) for y in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, heads * head_dim)
    else:
        # A few dozen tokens in heads of a few channels: explicit batched matmuls and a softmax (what diffusers'
        # AttnProcessor computes) run 1.2-2.5x faster than scaled_dot_product_attention's CPU flash kernel, whose
        # blocking is made for long sequences and wide heads.
        q, k, v = (_heads(y, heads, head_dim) for y in (q, k, v))
        # Transposed: scores as (keys, queries) and out^T = V^T P^T. MKL multiplies (head_dim x keys)(keys x
        # queries) 2-3x faster than (queries x keys)(keys x head_dim) for heads of 8 channels, in the backward
        # pass too, and softmax over the keys as dim 1 runs vectorised along the queries (over 20 keys as the last
        # dim it is 2x slower). beta = 0: the (uninitialised) first argument only gives the result's shape.
        scores = torch.baddbmm(k.new_empty(k.shape[0], k.shape[1], q.shape[1]), k, q.transpose(1, 2),
                               beta=0.0, alpha=a.scale)
        out = torch.bmm(v.transpose(1, 2), scores.softmax(dim=1))  # (batch * heads, head_dim, queries)
        out = out.view(batch, heads, head_dim, -1).permute(0, 3, 1, 2).reshape(batch, -1, heads * head_dim)
    to_out = sub["to_out"]
    return _dropout(to_out[1], _layer(to_out[0], out))


def _heads(y: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """(batch, tokens, heads * head_dim) -> (batch * heads, tokens, head_dim)."""
    batch, tokens, _ = y.shape
    return y.view(batch, tokens, heads, head_dim).transpose(1, 2).reshape(batch * heads, tokens, head_dim)


def _cat_channels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.cat([a, b], dim=1)``; for channels-last tensors, as a concatenation of their contiguous
    (batch, H, W, C) views along the last dimension: torch.cat's own channels-last path takes up to 6x longer
    for some channel counts (32 + 16 at 32x32: 37 ms against 6 ms at batch 512)."""
    cl = torch.channels_last
    if a.is_contiguous(memory_format=cl) and b.is_contiguous(memory_format=cl):
        return torch.cat([a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)], dim=-1).permute(0, 3, 1, 2)
    return torch.cat([a, b], dim=1)


def _feed_forward(ff: Any, x: torch.Tensor) -> torch.Tensor:
    net = ff._modules["net"]
    h, gate = _layer(net[0]._modules["proj"], x).chunk(2, dim=-1)
    h = h * F.gelu(gate)
    for m in net[1:]:
        h = _dropout(m, h) if isinstance(m, torch.nn.Dropout) else _layer(m, h)
    return h


def _layer(m: Any, x: torch.Tensor) -> torch.Tensor:
    """``m(x)``; for a LoRA layer, with its adapter folded into the weight: ``W + scale * B A`` is the same linear
    map as ``W x + scale * B (A x)`` (peft's own merge formula), computed as one matmul or convolution instead of
    three plus an addition, without changing the layer's parameters (autograd reaches A and B through the sum)."""
    weight = _folded_weight(m)
    if weight is None:
        return m(x)
    base = m.base_layer
    if isinstance(base, torch.nn.Linear):
        return F.linear(x, weight, base.bias)
    return F.conv2d(x, weight, base.bias, base.stride, base.padding, base.dilation, base.groups)


def _folded_weight(m: Any) -> torch.Tensor | None:
    """The base weight plus the active adapters' deltas, or None where ``m`` is not plain LoRA to fold."""
    modules = m._modules  # dict lookups: nn.Module.__getattr__ costs a microsecond a call, ~100 calls a forward
    lora_a = modules.get("lora_A")
    if lora_a is None or m.disable_adapters or m.merged:
        return None  # not LoRA, or peft's forward runs the base layer alone (or the already merged weight)
    active = m.active_adapters
    # Whether the layer can be folded depends only on its adapters: decided once per set of them.
    key = (tuple(active), tuple(lora_a._modules))
    plan = m.__dict__.get("_textnorm_fold_plan")
    if plan is None or plan[0] != key:
        plan = (key, _foldable(m, active))
        m.__dict__["_textnorm_fold_plan"] = plan
    active = plan[1]
    if active is None:
        return None
    if torch.is_grad_enabled():
        return _fold(m, active)
    # Without autograd (sampling: many calls between optimiser steps) the folded weight is kept until any of its
    # tensors changes: an optimiser step or a load bumps a tensor's version, a reassignment changes its storage.
    lora_b = modules["lora_B"]._modules
    tensors = [modules["base_layer"]._parameters["weight"]] + [
        w for a in active for w in (lora_a._modules[a]._parameters["weight"], lora_b[a]._parameters["weight"])]
    key = (active, tuple(m.scaling[a] for a in active), tuple((t.data_ptr(), t._version) for t in tensors))
    cached = m.__dict__.get("_textnorm_folded")
    if cached is None or cached[0] != key:
        cached = (key, _fold(m, active))
        m.__dict__["_textnorm_folded"] = cached
    return cached[1]


def _foldable(m: Any, active: list[str]) -> tuple[str, ...] | None:
    """The active adapters of a LoRA layer whose ``W + scale * B A`` is its forward, or None if peft's forward
    does more (DoRA and other variants, dropout, LoRA biases, a base layer other than Linear or Conv2d)."""
    from peft.tuners.lora.layer import LoraLayer

    base = m.base_layer
    if (not isinstance(m, LoraLayer) or type(base) not in (torch.nn.Linear, torch.nn.Conv2d)
            or getattr(base, "padding_mode", "zeros") != "zeros"):
        return None
    active = [a for a in active if a in m.lora_A]
    if any(a in m.lora_variant or not isinstance(m.lora_dropout[a], torch.nn.Identity)
           or getattr(m, "lora_bias", {}).get(a, False) for a in active):
        return None
    return tuple(active)


def _fold(m: Any, active: tuple[str, ...]) -> torch.Tensor:
    weight = m.base_layer.weight
    for a in active:
        A, B = m.lora_A[a].weight, m.lora_B[a].weight
        if (A.dtype == B.dtype == weight.dtype and B.shape[2:] in ((), (1, 1))
                and not getattr(m, "fan_in_fan_out", False) and getattr(m.base_layer, "groups", 1) == 1):
            # W + s * B A as one addmm over the weights flattened to (out, in * kh * kw): peft's get_delta_weight
            # runs a 3x3 layer's product as a convolution (a few hundred microseconds for a 32x4 matrix, in the
            # forward and again in the backward pass) and then adds and scales as separate operations.
            weight = torch.addmm(weight.flatten(1), B.flatten(1), A.flatten(1), alpha=m.scaling[a]).view_as(weight)
        else:
            weight = weight + m.get_delta_weight(a)
    return weight
