"""ByteTable: a vocabulary's n byte strings packed into one buffer (compact, immutable).

A list of 262k `bytes` or `str` objects costs ~50-80 bytes per entry in object headers alone
(~20 MiB for Gemma's vocabulary); here all entries share one `bytes` blob plus one offsets
array (~4 bytes per entry + the bytes themselves). Indexing returns a fresh `bytes` slice, equal
to what was stored. Must not: know what the entries mean (token texts, token bytes).
"""

from __future__ import annotations

from array import array
from typing import Iterable


class ByteTable:
    """table[i] -> the i-th stored bytes; len(table) entries; max_len = the longest entry's length."""

    __slots__ = ("_blob", "_off", "max_len")

    def __init__(self, entries: Iterable[bytes]):
        parts: list[bytes] = []
        off = array("q", [0])  # off[i]..off[i+1]: entry i in _blob
        end = longest = 0
        for b in entries:
            parts.append(b)
            end += len(b)
            off.append(end)
            longest = max(longest, len(b))
        self._blob = b"".join(parts)
        self._off = off
        self.max_len = longest

    def __len__(self) -> int:
        return len(self._off) - 1

    def __getitem__(self, i: int) -> bytes:
        if i < 0:  # a list's negative indexing, so a table reads like the list it replaces
            i += len(self._off) - 1
        return self._blob[self._off[i]:self._off[i + 1]]

    def nbytes(self) -> int:
        """Memory held by the table's two buffers (bytes)."""
        return len(self._blob) + self._off.itemsize * len(self._off)
