"""GPT-2 style byte-level BPE vocabularies (`tokenizer.ggml.model = gpt2`) as a `tokenizers` backend.

Owns: the byte <-> printable-unicode alphabet GPT-2 vocabularies are written in, building the
Rust BPE model from tokens + merges + the pre-tokenizer named by `tokenizer.ggml.pre`, and each
token's raw bytes for decoding. Must not: add BOS/EOS or decide which tokens are special
(the Tokenizer facade does).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from tokenizers import AddedToken, Tokenizer as HFTokenizer, models

from .pretokenizer import build_pretokenizer
from .token_type import PARSED_AS_SPECIAL, TokenType


def byte_alphabet() -> list[str]:
    """The character that stands for each byte value 0..255 in a byte-level vocabulary.

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68
    (controls, space, DEL, NBSP, soft hyphen) are shifted to U+0100.. in byte order, so ' ' is 'Ġ'.
    """
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, shifted = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(0x100 + shifted))
            shifted += 1
    return chars


_CHAR_TO_BYTE = {c: b for b, c in enumerate(byte_alphabet())}


def _unmap(text: str) -> bytes:
    """Byte-level token text -> its bytes; a char outside the alphabet keeps its UTF-8 bytes."""
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in text)
    except KeyError:
        return b"".join(bytes([_CHAR_TO_BYTE[c]]) if c in _CHAR_TO_BYTE else c.encode("utf-8")
                        for c in text)


def parse_merges(merges: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """GGUF "left right" strings -> pairs, dropping any whose parts are not in the vocabulary."""
    pairs = []
    for m in merges:
        left, sep, right = m.partition(" ")
        if sep and left in vocab and right in vocab:
            pairs.append((left, right))
    return pairs


def build_bpe_backend(tokens: list[str], merges: list[str], types: np.ndarray,
                      pre: Optional[str]) -> HFTokenizer:
    """A `tokenizers.Tokenizer` that encodes text to this vocabulary's ids (no BOS/EOS)."""
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a string listed twice: the first id wins
    spec = build_pretokenizer(pre)
    bpe = models.BPE(vocab, parse_merges(merges, vocab), ignore_merges=spec.ignore_merges)
    hf = HFTokenizer(bpe)
    if spec.normalizer is not None:
        hf.normalizer = spec.normalizer
    hf.pre_tokenizer = spec.pre_tokenizer
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i in np.flatnonzero(np.isin(types, PARSED_AS_SPECIAL)).tolist()]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i in np.flatnonzero(types == TokenType.USER_DEFINED).tolist()]
    if special:
        hf.add_special_tokens(special)
    if user:
        hf.add_tokens(user)
    return hf


def bpe_token_bytes(tokens: list[str], types: np.ndarray) -> list[bytes]:
    """Raw bytes each token contributes: byte-level text unmapped; control/user tokens verbatim."""
    verbatim = np.isin(types, (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN,
                               TokenType.UNUSED))
    return [t.encode("utf-8") if verbatim[i] else _unmap(t) for i, t in enumerate(tokens)]
