"""Incremental detokenizer: generated token ids -> UTF-8-safe text deltas with stop strings.

Owns: one generation's text stream. push(id) returns the text that can be shown now: never half
a UTF-8 character (byte-fallback tokens arrive one byte at a time) and never any part of a stop
string (text that could still grow into one is held back until it cannot). Once a stop string
appears, `stopped` is True; the text before it has been released, the stop string and anything
after never are. Must not: look at more than the new bytes plus the held-back tail per push.
"""

from __future__ import annotations

import codecs
from typing import Iterable


class Detokenizer:
    """Text deltas for one generation. `tokenizer` needs token_bytes(id), is_special(id).

    Spaces: SentencePiece's '▁' is a real space in generated text. A generation continues its
    prompt, so a leading '▁' on the first generated token is a space the model chose (e.g. after
    "Answer:"), not the dummy prefix SentencePiece adds at the start of a whole text - it is
    kept, as llama.cpp does. Only a caller decoding a text from its very beginning (no prompt
    text before it) passes at_text_start=True to drop one leading space on add_space_prefix
    vocabularies, which is what Tokenizer.decode does for whole texts.
    """

    def __init__(self, tokenizer, stop: Iterable[str] = (), skip_special: bool = True,
                 at_text_start: bool = False):
        self._tok = tokenizer
        self._stops = [s for s in dict.fromkeys(stop) if s]  # unique, non-empty, in order
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text not yet released: a possible stop-string start (chars)
        self._strip_space = at_text_start and bool(getattr(tokenizer, "add_space_prefix", False))
        self.stopped = False
        self.keep_special: frozenset = frozenset()  # special ids whose text is kept (markers)

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text released by it (often "")."""
        if self.stopped:
            return ""
        if self._skip_special and self._tok.is_special(token_id) and token_id not in self.keep_special:
            return ""
        return self._release(self._utf8.decode(self._tok.token_bytes(token_id), final=False))

    def flush(self) -> str:
        """End of generation: release everything held (a cut UTF-8 character -> U+FFFD)."""
        if self.stopped:
            return ""
        out = self._release(self._utf8.decode(b"", final=True))
        if not self.stopped:
            out += self._held
            self._held = ""
        return out

    def _release(self, new: str) -> str:
        if not new:
            return ""
        if self._strip_space:
            if new.startswith(" "):
                new = new[1:]
            self._strip_space = False
        text = self._held + new  # held is < longest stop string, so this is O(new)
        if not self._stops:
            self._held = ""
            return text
        cut = -1
        for s in self._stops:  # earliest stop occurrence wins
            i = text.find(s)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        hold = max(_partial_stop(text, s) for s in self._stops)
        self._held = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold]


def _partial_stop(text: str, stop: str) -> int:
    """Length (chars) of the longest suffix of `text` that is a proper prefix of `stop`: text
    that may still grow into it. No memory beyond the strings; time O(len(stop)) per candidate
    start, and candidates are only the places of stop's first character in text's tail."""
    i = text.find(stop[0], max(0, len(text) - len(stop) + 1))
    while i >= 0:
        if stop.startswith(text[i:]):
            return len(text) - i
        i = text.find(stop[0], i + 1)
    return 0
