"""Registration of the built-in reward backends."""

from __future__ import annotations

from typing import Any

from textnorm.rewards.registry import register_reward


@register_reward("clip", "CLIPScore: 100 x cosine (transformers CLIPModel)", "openai/clip-vit-large-patch14")
def _clip(path_or_id: str, **kw: Any):
    from textnorm.rewards.clip import CLIPReward

    return CLIPReward.from_pretrained(path_or_id, convention="clipscore", **kw)


@register_reward("pickscore", "PickScore: logit_scale.exp() x cosine (transformers CLIPModel)",
                 "yuvalkirstain/PickScore_v1")
def _pickscore(path_or_id: str, **kw: Any):
    from textnorm.rewards.clip import CLIPReward

    if path_or_id == "yuvalkirstain/PickScore_v1":
        kw.setdefault("processor", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    return CLIPReward.from_pretrained(path_or_id, convention="pickscore", **kw)


@register_reward("blip2", "BLIP-2 ITM probability (head=itc: contrastive similarity)", "Salesforce/blip2-itm-vit-g")
def _blip2(path_or_id: str, **kw: Any):
    from textnorm.rewards.blip2 import BLIP2Reward

    return BLIP2Reward.from_pretrained(path_or_id, **kw)


@register_reward("imagereward", "ImageReward via the image-reward package (optional extra)", "ImageReward-v1.0")
def _imagereward(path_or_id: str, **kw: Any):
    from textnorm.rewards.external import ImageRewardReward

    return ImageRewardReward(path_or_id, **kw)


@register_reward("hpsv2", "HPSv2 via the hpsv2 package (optional extra)", None)
def _hpsv2(path_or_id: str | None, **kw: Any):
    from textnorm.rewards.external import HPSv2Reward

    return HPSv2Reward(path_or_id, **kw)


def _shipped_model(name: str) -> str:
    from importlib import resources

    return str(resources.files("textnorm") / "data" / "models" / name)


def _register_shapes(name: str, description: str) -> None:
    @register_reward(name, description, _shipped_model(name))
    def _build(path_or_id: str, **kw: Any):
        from textnorm.rewards.shapes import ShapesReward

        return ShapesReward.from_pretrained(path_or_id, **kw)


_register_shapes("shapes-clip-a", "embedded proxy: CNN + bag-of-words dual encoder, noisy captions (shipped)")
_register_shapes("shapes-clip-b", "embedded proxy: CNN + transformer dual encoder, noisy captions (shipped)")
