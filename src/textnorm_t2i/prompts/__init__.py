"""Contrastive prompt sets: rules, files, and language models."""

from textnorm_t2i.prompts.files import load_prompt_sets, read_prompt_list
from textnorm_t2i.prompts.rules import rule_set, rule_sets

__all__ = ["load_prompt_sets", "read_prompt_list", "rule_set", "rule_sets"]
