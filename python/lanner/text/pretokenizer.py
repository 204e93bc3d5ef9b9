"""Pre-tokenizers for GPT-2 style byte-level BPE vocabularies, chosen by `tokenizer.ggml.pre`.

Owns: the table from the GGUF pre-tokenizer name to a PreTokenizerSpec (normalizer,
pre-tokenizer of the `tokenizers` library, ignore_merges) and the regexes that split text into
words before BPE merges.
Must not: know the vocabulary or merges; an unknown name falls back to GPT-2's split with a
warning (the ids may then differ from the model's training tokenizer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from tokenizers import Regex, normalizers, pre_tokenizers

log = logging.getLogger(__name__)

# Llama 3 / tiktoken cl100k-style split: case-insensitive contractions, a letter run with one
# optional leading non-letter, digit groups of 1-3, punctuation runs with trailing newlines,
# newline runs, whitespace not followed by a non-space, any other whitespace.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

# Qwen 2: the same shape, but every digit is its own word.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

# GPT-4o / o200k (gpt-oss, Llama 4): words are an optional non-letter, then upper-case-ish letters
# followed by lower-case-ish ones (or the reverse), each with an optional English contraction;
# digit groups of 1-3; punctuation runs keep trailing newlines and slashes; then as Llama 3.
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

_GPT2_NAMES = {"", "default", "gpt2", "gpt-2"}
# Families whose training tokenizer splits every digit off before GPT-2's byte-level split.
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_LLAMA3_NAMES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}
_QWEN2_NAMES = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"}
_GPT4O_NAMES = {"gpt-4o", "llama4"}


@dataclass(frozen=True)
class PreTokenizerSpec:
    normalizer: Any       # tokenizers normalizer or None
    pre_tokenizer: Any    # tokenizers pre-tokenizer (always ends in the byte-level mapping)
    ignore_merges: bool   # a word that is itself in the vocabulary is emitted whole (Llama 3)


def _byte_level(use_regex: bool) -> pre_tokenizers.ByteLevel:
    """GPT-2's byte -> printable-unicode mapping; with use_regex, also GPT-2's word split."""
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=use_regex)


def build_pretokenizer(name: Optional[str]) -> PreTokenizerSpec:
    """The spec for the GGUF `tokenizer.ggml.pre` value `name` (None/"" = GPT-2)."""
    key = (name or "").lower()
    if key in _GPT2_NAMES:
        return PreTokenizerSpec(None, _byte_level(True), False)
    if key in _DIGITS_THEN_GPT2:
        digits = pre_tokenizers.Digits(individual_digits=True)
        return PreTokenizerSpec(None, pre_tokenizers.Sequence([digits, _byte_level(True)]), False)
    if key in _LLAMA3_NAMES:
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False)
        return PreTokenizerSpec(None, pre_tokenizers.Sequence([split, _byte_level(False)]), True)
    if key in _QWEN2_NAMES:
        # Qwen2's own tokenizer also applies Unicode NFC before splitting.
        split = pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False)
        seq = pre_tokenizers.Sequence([split, _byte_level(False)])
        return PreTokenizerSpec(normalizers.NFC(), seq, False)
    if key in _GPT4O_NAMES:
        split = pre_tokenizers.Split(Regex(_GPT4O_SPLIT), behavior="isolated", invert=False)
        return PreTokenizerSpec(None, pre_tokenizers.Sequence([split, _byte_level(False)]), False)
    log.warning("unknown pre-tokenizer %r: using GPT-2's split; token ids may differ from the "
                "model's own tokenizer", name)
    return PreTokenizerSpec(None, _byte_level(True), False)


def known_pretokenizers() -> frozenset[str]:
    """Every `tokenizer.ggml.pre` name handled exactly (not by the GPT-2 fallback)."""
    return frozenset(_GPT2_NAMES | _DIGITS_THEN_GPT2 | _LLAMA3_NAMES | _QWEN2_NAMES | _GPT4O_NAMES)
