"""GGUF token types (`tokenizer.ggml.token_type` values) and the classes built on them.

Owns: the numeric type codes shared by the tokenizer builders and the Tokenizer facade, and the
rule for which types count as special (never produced from plain text, skipped by decode).
Must not: know any vocabulary; it only classifies type codes.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class TokenType(IntEnum):
    UNDEFINED = 0
    NORMAL = 1        # produced by merges from plain text
    UNKNOWN = 2       # <unk>
    CONTROL = 3       # <bos>, <eos>, <|im_end|>, <end_of_turn> ...: parsed only with parse_special
    USER_DEFINED = 4  # always matched verbatim in text (Gemma's "\n\n", runs of spaces/tabs)
    UNUSED = 5        # reserved; never produced from text
    BYTE = 6          # <0xNN> byte-fallback token


# Types whose text is matched in input only when the caller asks for special-token parsing.
PARSED_AS_SPECIAL = (TokenType.CONTROL, TokenType.UNKNOWN)
# Types `is_special` reports and decode(skip_special=True) drops.
SPECIAL_TYPES = (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.UNUSED)


def token_types(meta: dict, n_vocab: int) -> np.ndarray:
    """(n_vocab,) int32 type codes; NORMAL for every token when the file has no types."""
    raw = meta.get("tokenizer.ggml.token_type")
    if raw is None:
        return np.full(n_vocab, TokenType.NORMAL, dtype=np.int32)
    types = np.asarray(raw, dtype=np.int32)
    if types.shape != (n_vocab,):
        raise ValueError(f"tokenizer.ggml.token_type has {types.size} entries, tokens has {n_vocab}")
    return types
