"""Text <-> token ids for a GGUF model, built from the file's `tokenizer.ggml.*` metadata.

Owns: the Tokenizer facade others code against: encode (BOS/EOS, special-token parsing), decode,
each token's bytes/text/type, BOS/EOS and the end-of-generation id set. The merging itself is
done by the Rust `tokenizers` library, configured by tokenizer_spm.py (SentencePiece-BPE,
`llama`) or tokenizer_bpe.py (byte-level BPE, `gpt2`). Must not: read files or call the native
core; it gets a plain metadata dict (see tests/gguf_metadata.py for the format).
"""

from __future__ import annotations

import re
import threading
from typing import Iterable, Optional, Sequence

import numpy as np

from .byte_table import ByteTable
from .chat_fence import special_pattern
from .token_type import PARSED_AS_SPECIAL, SPECIAL_TYPES, TokenType, token_types
from .tokenizer_bpe import bpe_token_bytes, build_bpe_backend
from .tokenizer_spm import build_spm_backend, spm_token_bytes

# Texts of tokens that end a generation when present in a vocabulary (besides EOS itself).
EOG_TEXTS = frozenset({
    "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "<end_of_utterance>", "<|return|>", "<|call|>",
    "<｜end▁of▁sentence｜>",
})


_UNSET = object()


def _opt_id(meta: dict, key: str, n_vocab: int) -> Optional[int]:
    v = meta.get(key)
    if v is None:
        return None
    v = int(v)
    return v if 0 <= v < n_vocab else None


class Tokenizer:
    """Encode/decode for one vocabulary. Thread-safe; build with `Tokenizer.from_metadata`."""

    def __init__(self, *, model: str, tokens: list[str], types: np.ndarray, backend,
                 token_bytes: list[bytes], bos_id: Optional[int], eos_id: Optional[int],
                 add_bos: bool, add_eos: bool, add_space_prefix: bool, eog_ids: frozenset[int]):
        self.model = model                      # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
        # (n_vocab,) vocabulary strings as stored, UTF-8, packed (a list of str: ~20 MiB for 262k)
        self._texts = ByteTable(t.encode("utf-8", "surrogatepass") for t in tokens)
        self._types = types                     # (n_vocab,) int32 TokenType codes
        self._backend = backend                 # tokenizers.Tokenizer, no post-processor
        self._bytes = ByteTable(token_bytes)    # (n_vocab,) raw bytes each token contributes
        self._special = np.isin(types, SPECIAL_TYPES)  # (n_vocab,) bool
        self._special_pattern = _UNSET                 # see special_pattern
        self._lock = threading.Lock()           # guards the backend's encode_special_tokens flag
        fast = getattr(backend, "encode_batch_fast", None)  # tokenizers >= 0.21: no offsets
        self._encode_raw = ((lambda t: fast([t], add_special_tokens=False)[0].ids) if fast else
                            (lambda t: backend.encode(t, add_special_tokens=False).ids))
        self.n_vocab = len(tokens)
        self.max_token_bytes = max(self._bytes.max_len, 1)  # a token's most bytes
        self.bos_id, self.eos_id = bos_id, eos_id
        self.add_bos, self.add_eos = add_bos, add_eos
        self.add_space_prefix = add_space_prefix
        self.eog_ids = eog_ids
        self.bos_text = tokens[bos_id] if bos_id is not None else None
        self.eos_text = tokens[eos_id] if eos_id is not None else None  # `tokens` is not kept

    # ---- load --------------------------------------------------------------------------------

    @classmethod
    def from_metadata(cls, meta: dict) -> "Tokenizer":
        """Build from GGUF key/values (`tokenizer.ggml.model`, `.tokens`, `.scores`, `.merges` ...)."""
        model = meta.get("tokenizer.ggml.model")
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ValueError("GGUF metadata has no tokenizer.ggml.tokens")
        tokens = list(tokens)
        n_vocab = len(tokens)
        types = token_types(meta, n_vocab)
        unk_id = _opt_id(meta, "tokenizer.ggml.unknown_token_id", n_vocab)
        if model == "llama":
            scores = meta.get("tokenizer.ggml.scores")
            if scores is None:
                raise ValueError("SentencePiece vocabulary (model=llama) without tokenizer.ggml.scores")
            scores = np.asarray(scores, dtype=np.float32)
            add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
            backend = build_spm_backend(tokens, scores, types, unk_id, add_space_prefix)
            token_bytes = spm_token_bytes(tokens, types)
            default_bos = True
        elif model == "gpt2":
            merges = meta.get("tokenizer.ggml.merges")
            if merges is None:
                raise ValueError("byte-level BPE vocabulary (model=gpt2) without tokenizer.ggml.merges")
            add_space_prefix = False
            backend = build_bpe_backend(tokens, list(merges), types, meta.get("tokenizer.ggml.pre"))
            token_bytes = bpe_token_bytes(tokens, types)
            default_bos = False
        else:
            raise NotImplementedError(f"tokenizer model {model!r} is not supported (llama, gpt2 are)")
        bos_id = _opt_id(meta, "tokenizer.ggml.bos_token_id", n_vocab)
        eos_id = _opt_id(meta, "tokenizer.ggml.eos_token_id", n_vocab)
        eog = {i for i in (eos_id, _opt_id(meta, "tokenizer.ggml.eot_token_id", n_vocab),
                           _opt_id(meta, "tokenizer.ggml.eom_token_id", n_vocab)) if i is not None}
        for i, t in enumerate(tokens):
            if t in EOG_TEXTS and types[i] in (TokenType.CONTROL, TokenType.USER_DEFINED):
                eog.add(i)
        eog_texts = {tokens[i] for i in eog}
        if {"<|return|>", "<|call|>", "<|end|>"} <= eog_texts:
            # Harmony (gpt-oss): <|end|> closes a message (analysis, tool call), not the turn;
            # <|return|> / <|call|> end the generation (as llama.cpp decides)
            eog -= {i for i in eog if tokens[i] == "<|end|>"}
        return cls(model=model, tokens=tokens, types=types, backend=backend,
                   token_bytes=token_bytes, bos_id=bos_id, eos_id=eos_id,
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", default_bos)) and bos_id is not None,
                   add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos_id is not None,
                   add_space_prefix=add_space_prefix, eog_ids=frozenset(eog))

    # ---- encode ------------------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids for `text`.

        add_special: prepend BOS / append EOS as the model's add_bos/add_eos flags say. BOS is not
        doubled: with parse_special and a text that already starts with the BOS token, it is kept
        as the only one. parse_special: match control tokens (`<|im_end|>`, `<end_of_turn>` ...)
        written in the text; when False they are tokenized as the plain characters they are.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        with self._lock:
            self._backend.encode_special_tokens = not parse_special
            ids = self._encode_raw(text)
        return self.add_specials(ids) if add_special else ids

    def token_to_id(self, text: str) -> "Optional[int]":
        """The id of the token spelled exactly `text` (the first such), or None."""
        return self.token_id(text)

    def add_specials(self, ids: list[int]) -> list[int]:
        """ids with BOS prepended (unless already first) and EOS appended, as the model's
        add_bos / add_eos flags say."""
        if self.add_bos and not (ids and ids[0] == self.bos_id):
            ids.insert(0, self.bos_id)
        if self.add_eos:
            ids.append(self.eos_id)
        return ids

    @property
    def special_pattern(self) -> "Optional[re.Pattern[str]]":
        """A regex matching the spelling of every token that special-token parsing matches
        (built once)."""
        if self._special_pattern is _UNSET:
            parsed = np.flatnonzero(np.isin(self._types, PARSED_AS_SPECIAL))
            self._special_pattern = special_pattern([self.token_text(i) for i in parsed.tolist()])
        return self._special_pattern

    # ---- decode ------------------------------------------------------------------------------

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < self.n_vocab:
            raise ValueError(f"token id {token_id} out of range [0, {self.n_vocab})")
        return token_id

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`; invalid UTF-8 (a cut byte sequence) becomes U+FFFD.

        The inverse of encode: with add_space_prefix (SentencePiece dummy prefix) one leading
        space is removed. Streaming output uses Detokenizer, which never strips it.
        """
        tb, special = self._bytes, self._special
        parts = []  # ByteTable slices
        for i in ids:
            self._check(i)
            if skip_special and special[i]:
                continue
            parts.append(tb[i])
        text = b"".join(parts).decode("utf-8", errors="replace")
        if self.add_space_prefix and text.startswith(" "):
            text = text[1:]
        return text

    def token_bytes(self, token_id: int) -> bytes:
        """Raw UTF-8 bytes the token contributes (<0xNN> -> that byte; SentencePiece '▁' -> ' ')."""
        return self._bytes[self._check(token_id)]

    def token_text(self, token_id: int) -> str:
        """The vocabulary string as stored in the file (e.g. '▁the', 'Ġthe', '<0x0A>')."""
        return self._texts[self._check(token_id)].decode("utf-8", "surrogatepass")

    def token_type(self, token_id: int) -> TokenType:
        return TokenType(int(self._types[self._check(token_id)]))

    def is_special(self, token_id: int) -> bool:
        """Control, unknown or unused token: never produced from plain text, skipped by decode."""
        return bool(self._special[self._check(token_id)])

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    def token_id(self, text: str) -> Optional[int]:
        """The id of the vocabulary entry spelled exactly `text` (as stored), or None.

        The backend's vocabulary is built text -> first id (tokenizer_spm/_bpe), and its added
        tokens reuse those ids, so it answers without a Python dict of the whole vocabulary."""
        i = self._backend.token_to_id(text)
        return i if i is not None and i < self.n_vocab else None

    def special_ids(self) -> Sequence[int]:
        return np.flatnonzero(self._special).tolist()
