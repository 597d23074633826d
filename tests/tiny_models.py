"""Tiny randomly initialised models of the real classes, saved locally (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a an the one two three four five photo of realistic red green blue yellow circle circles square squares "
         "triangle triangles and to left right above below cat cats dog dogs book books apple apples").split()


def word_tokenizer(bos: str = "[BOS]", eos: str = "[EOS]", extra: tuple[str, ...] = ()):
    """A word-level fast tokenizer that adds BOS/EOS (a stand-in for a real BPE vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", bos, eos, *extra]
    vocab = {t: i for i, t in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token=bos,
                                   eos_token=eos), vocab


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer, vocab = word_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, pad_token_id=0,
                         bos_token_id=vocab["[BOS]"], eos_token_id=vocab["[EOS]"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16, logit_scale_init_value=2.0)
    CLIPModel(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def save_tiny_blip2(path: Path, seed: int = 0) -> Path:
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, BlipImageProcessor

    tokenizer, vocab = word_tokenizer(bos="[CLS]", eos="[SEP]")
    torch.manual_seed(seed)
    cfg = Blip2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, encoder_hidden_size=16, max_position_embeddings=32,
                            use_qformer_text_input=True, pad_token_id=0),
        num_query_tokens=4, image_text_hidden_size=8)
    Blip2ForImageTextRetrieval(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def save_tiny_shapes_pipeline(path: Path, seed: int = 0) -> Path:
    from textnorm_t2i.generate.pipeline import build_pipeline

    build_pipeline({"block_out_channels": [8, 16, 16], "text_hidden": 16, "attention_head_dim": 4},
                   seed=seed).save_pretrained(path)
    return path


def save_tiny_sd_pipeline(path: Path, seed: int = 0) -> Path:
    """A Stable Diffusion-style pipeline (VAE + UNet + CLIP text encoder) with tiny random weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer, vocab = word_tokenizer()
    tokenizer.model_max_length = 16
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        pad_token_id=0, bos_token_id=vocab["[BOS]"], eos_token_id=vocab["[EOS]"]))
    scheduler = DDPMScheduler(prediction_type="epsilon", steps_offset=1, clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def save_tiny_shapes_reward(path: Path, seed: int = 0) -> Path:
    from textnorm_t2i.rewards.shapes import ShapesDualEncoder, ShapesReward, reward_tokenizer

    tok = reward_tokenizer()
    torch.manual_seed(seed)
    model = ShapesDualEncoder({"arch": "cnn-bow", "dim": 16, "image_widths": [8, 16]}, len(tok))
    ShapesReward(model, tok, name="tiny-shapes").save_pretrained(path)
    return path
