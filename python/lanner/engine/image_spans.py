"""Image spans in prompts: how an image's embedding rows ride in a list of token ids.

Owns: the id scheme and what the engine does with it. Image token i of the image whose pixel key
is k (a 46-bit hash of its decoded pixels) is the negative id -(1 + k * 2**16 + i), so equal
images give equal ids: the prefix cache matches them like text and a later turn about the same
image reuses its cells. Spans are never cut: a cached prefix or a prompt chunk ends before a span
or after it, so a bidirectional span (Gemma 3) is always computed whole in one decode call.
Must not: decode images or call the native core (the engine passes `decode_args` to it).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

KEY_BITS = 46                 # pixel key width; ids stay within int64
MAX_SPAN = 1 << 16            # image tokens per image


def image_token_id(key: int, i: int) -> int:
    return -(1 + (key << 16) + i)


def span_ids(key: int, n: int) -> list[int]:
    """The ids of an image of `n` embedding rows whose pixel key is `key`."""
    if not 0 < n <= MAX_SPAN or not 0 <= key < (1 << KEY_BITS):
        raise ValueError(f"bad image span: key {key}, {n} rows")
    return [image_token_id(key, i) for i in range(n)]


def key_of(tok: int) -> int:
    return (-tok - 1) >> 16


def index_of(tok: int) -> int:
    return (-tok - 1) & 0xFFFF


def span_safe(tokens: Sequence[int], n: int) -> int:
    """n, moved back to the start of the image span it would cut (tokens[:n] keeps spans whole)."""
    while 0 < n < len(tokens) and tokens[n] < 0 and index_of(tokens[n]) > 0:
        n -= 1
    return n


def span_len_at(tokens: Sequence[int], p: int) -> int:
    """Length of the image span starting at p (0 when tokens[p] starts none)."""
    if p >= len(tokens) or tokens[p] >= 0 or index_of(tokens[p]) != 0:
        return 0
    k, n = key_of(tokens[p]), 1
    while p + n < len(tokens) and tokens[p + n] < 0 and key_of(tokens[p + n]) == k and index_of(tokens[p + n]) == n:
        n += 1
    return n


def spans(tokens: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, length, key) of every image span in tokens."""
    out, p = [], 0
    while p < len(tokens):
        n = span_len_at(tokens, p)
        if n:
            out.append((p, n, key_of(tokens[p])))
            p += n
        else:
            p += 1
    return out


def check_prompt(tokens: Sequence[int], images: Mapping[int, np.ndarray], n_vocab: Optional[int],
                 max_span: int) -> Optional[str]:
    """Why `tokens` cannot run with `images` (key -> (n_rows, n_embd)), or None if it can:
    every negative id lies in a whole span whose image is given with as many rows, spans fit
    one decode call (max_span), text ids lie in the vocabulary."""
    text = [t for t in tokens if t >= 0]
    if n_vocab is not None and ((text and max(text) >= n_vocab) or (not images and len(text) < len(tokens))):
        return f"token ids must be in [0, {n_vocab}) (the vocabulary)"
    found = spans(tokens)
    if sum(n for _, n, _ in found) != len(tokens) - len(text):
        return "image token ids must come in whole spans"
    for _, n, k in found:
        e = images.get(k)
        if e is None:
            return "an image span has no embeddings"
        if e.shape[0] != n:
            return f"an image span has {n} tokens but its image {e.shape[0]} embedding rows"
        if n > max_span:
            return f"an image of {n} tokens does not fit one decode call ({max_span} tokens)"
    return None


def decode_args(tokens: np.ndarray, pos: np.ndarray, images: Mapping[int, np.ndarray],
                bidirectional: bool) -> dict:
    """Keyword arguments for Context.decode: int32 tokens with image ids as -1, their rows in
    order (embd), and attn_end so that each image span sees itself whole when bidirectional."""
    neg = tokens < 0
    if not neg.any():
        return {"tokens": tokens.astype(np.int32)}
    rows = [images[key_of(int(t))][index_of(int(t))] for t in tokens[neg]]
    out = {"tokens": np.where(neg, -1, tokens).astype(np.int32),
           "embd": np.ascontiguousarray(np.stack(rows), dtype=np.float32)}
    if bidirectional:
        end = pos.astype(np.int32).copy()
        toks = tokens.tolist()
        for start, n, _ in spans(toks):  # a chunk holds whole spans (span_safe)
            end[start:start + n] = pos[start + n - 1]
        out["attn_end"] = end
    return out
