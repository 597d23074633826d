"""A word-level tokenizer (tokenizers library) for the prompts of the synthetic world."""

from __future__ import annotations

from textnorm_t2i.world.vocab import COLORS, COUNT_WORDS, LEAD_INS, PLURAL, RELATIONS, SHAPES

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
MAX_LENGTH = 20


def world_vocabulary() -> list[str]:
    """Every word the world's prompts use, in a fixed order.

    Example:
        >>> "circles" in world_vocabulary() and "left" in world_vocabulary()
        True
    """
    words = list(COUNT_WORDS) + list(COLORS) + list(SHAPES) + list(PLURAL.values())
    for phrase in [*LEAD_INS, *RELATIONS, "and"]:
        words += phrase.split()
    return list(dict.fromkeys(words))


def build_tokenizer(extra_words: tuple[str, ...] = (), max_length: int = MAX_LENGTH):
    """A ``PreTrainedTokenizerFast`` over :func:`world_vocabulary` (plus ``extra_words``), adding
    [BOS]/[EOS], lower-casing.

    Example:
        >>> tok = build_tokenizer()
        >>> tok.convert_ids_to_tokens(tok("Two red circles.")["input_ids"])
        ['[BOS]', 'two', 'red', 'circles', '[UNK]', '[EOS]']
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(dict.fromkeys(SPECIALS + world_vocabulary() + list(extra_words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=max_length)
