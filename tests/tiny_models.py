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
