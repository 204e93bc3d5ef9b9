"""SentencePiece-BPE vocabularies (`tokenizer.ggml.model = llama`) as a `tokenizers` backend.

Owns: turning tokens + scores + types into a Rust BPE model that merges exactly like
SentencePiece's BPE encoder (highest-scoring adjacent pair first, ' ' escaped as U+2581,
user-defined pieces matched whole and never merged, unknown characters -> <0xNN> byte tokens),
and each token's raw bytes for decoding. Must not: add BOS/EOS or parse control tokens itself
(the Tokenizer facade does), or depend on the `sentencepiece` package.
"""

from __future__ import annotations

import numpy as np
from tokenizers import AddedToken, Tokenizer as HFTokenizer, models, normalizers

from .token_type import PARSED_AS_SPECIAL, TokenType

SPACE = "\u2581"  # SentencePiece's visible space '▁'


def merges_from_scores(tokens: list[str], scores: np.ndarray, types: np.ndarray) -> list[tuple[str, str]]:
    """Every (left, right) pair of NORMAL pieces whose concatenation is a NORMAL piece.

    Ordered by the merged piece's score, best first: SentencePiece's BPE picks the adjacent pair
    whose concatenation scores highest, which is what a rank-ordered merge list reproduces. A
    piece with several splits keeps them adjacent in the list (same piece, same priority).
    """
    normal_ids = np.flatnonzero(types == TokenType.NORMAL)
    normal = {}
    for i in normal_ids.tolist():
        normal.setdefault(tokens[i], i)
    # Stable sort: equal scores keep vocabulary order.
    order = normal_ids[np.argsort(-scores[normal_ids].astype(np.float64), kind="stable")]
    merges: list[tuple[str, str]] = []
    append = merges.append
    for i in order.tolist():
        piece = tokens[i]
        for k in range(1, len(piece)):
            left = piece[:k]
            if left in normal:
                right = piece[k:]
                if right in normal:
                    append((left, right))
    return merges


def _vocab(tokens: list[str]) -> dict[str, int]:
    """str -> id; for a string listed twice the first id wins."""
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    return vocab


def build_spm_backend(tokens: list[str], scores: np.ndarray, types: np.ndarray,
                      unk_id: int | None, add_space_prefix: bool) -> HFTokenizer:
    """A `tokenizers.Tokenizer` that encodes text to this vocabulary's ids (no BOS/EOS).

    Control/unknown tokens are registered as special added tokens (matched only when the caller
    lets the backend parse specials). User-defined tokens are matched like SentencePiece does:
    on the whitespace-escaped text, so "  " finds the piece stored as "  " (GGUF) / "▁▁" (.model).
    With add_space_prefix, a '▁' is prepended to each text run at the start or after a matched
    token (llama.cpp's convention for GGUF); user-defined tokens are then matched on raw text.
    """
    merges = merges_from_scores(tokens, scores, types)
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    bpe = models.BPE(_vocab(tokens), merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    hf = HFTokenizer(bpe)
    if add_space_prefix:
        hf.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    else:
        hf.normalizer = normalizers.Replace(" ", SPACE)
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i in np.flatnonzero(np.isin(types, PARSED_AS_SPECIAL)).tolist()]
    user = [AddedToken(tokens[i], special=False, normalized=not add_space_prefix)
            for i in np.flatnonzero(types == TokenType.USER_DEFINED).tolist()]
    if special:
        hf.add_special_tokens(special)
    if user:
        hf.add_tokens(user)
    return hf


def spm_token_bytes(tokens: list[str], types: np.ndarray) -> list[bytes]:
    """Raw UTF-8 bytes each token contributes to text: '▁' -> ' ', <0xNN> -> that byte."""
    out = [t.replace(SPACE, " ").encode("utf-8") for t in tokens]
    for i in np.flatnonzero(types == TokenType.BYTE).tolist():
        t = tokens[i]
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            out[i] = bytes([int(t[3:5], 16)])
    return out
