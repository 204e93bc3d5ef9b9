"""Prefix cache: which tokens each KV sequence id holds, and their reuse by new prompts.

Owns: one SeqEntry per sequence id (0..n_seq-1) recording the tokens whose cells are in the KV
cache, whether a running request holds it or it sits idle (LRU), session pins, and every
seq_rm / seq_cp / kv_clear the engine issues. A prompt matches on tokens; the longest common
prefix wins; an idle match is taken over, a running one is shared with seq_cp (no copy).
Must not: decode, sample, or be used from any thread but the model thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from .image_spans import span_safe

_CHUNK = 256  # tokens compared per slice when measuring a common prefix


def common_prefix_len(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """Length in tokens of the common prefix of a[:limit] and b[:limit]."""
    n = min(len(a), len(b), limit)
    i = 0
    while i + _CHUNK <= n and a[i:i + _CHUNK] == b[i:i + _CHUNK]:
        i += _CHUNK
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(eq=False)
class SeqEntry:
    """One KV sequence id. tokens[:n_cells] have cells at positions 0..n_cells-1 in this seq."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)  # may run ahead of n_cells while active
    n_cells: int = 0                 # tokens (= positions) with cells in this sequence
    active: bool = False             # bound to a running request
    last_used: int = 0               # LRU tick, larger = more recent
    session_id: Optional[str] = None


@dataclass
class Assignment:
    entry: SeqEntry
    n_cached: int  # prompt tokens whose cells were reused (positions 0..n_cached-1)


class PrefixCache:
    """Maps prompts onto sequence ids of `ctx` (a `_core.Context`), reusing cached prefixes."""

    def __init__(self, ctx, n_seq: int):
        self._ctx = ctx
        self.entries = [SeqEntry(seq_id=s) for s in range(n_seq)]
        self._sessions: dict[str, SeqEntry] = {}
        self._tick = 0

    # -- queries
    def idle(self) -> list[SeqEntry]:
        return [e for e in self.entries if not e.active and e.n_cells > 0]

    def n_free_seqs(self) -> int:
        """Sequence ids a new request could get (free or idle, i.e. not running)."""
        return sum(1 for e in self.entries if not e.active)

    def idle_cells_upper(self) -> int:
        """Upper bound, in cells, of what evicting every idle sequence would free."""
        return sum(e.n_cells for e in self.entries if not e.active)

    def match(self, prompt: Sequence[int], session_id: Optional[str] = None) -> tuple[Optional[SeqEntry], int]:
        """Best source for `prompt`: (entry, reusable tokens). At most len(prompt)-1 tokens are
        reused: the last prompt token is always recomputed to get its logits."""
        limit = len(prompt) - 1
        best, best_n = self._match(prompt, session_id, limit)
        return best, span_safe(prompt, best_n)  # an image span is reused whole or not at all

    def _match(self, prompt: Sequence[int], session_id: Optional[str], limit: int) -> tuple[Optional[SeqEntry], int]:
        pinned = self._sessions.get(session_id) if session_id is not None else None
        if pinned is not None and not pinned.active:
            n = common_prefix_len(pinned.tokens, prompt, min(limit, pinned.n_cells))
            if n > 0:
                return pinned, n
        best, best_n = None, 0
        for e in self.entries:
            if e.n_cells <= best_n:
                continue
            n = common_prefix_len(e.tokens, prompt, min(limit, e.n_cells))
            # ties: prefer an idle entry (taking it over costs no copy), then the most recent
            if n > best_n or (n == best_n and n > 0 and best is not None and best.active and not e.active):
                best, best_n = e, n
        return best, best_n

    # -- transitions
    def acquire(self, prompt: Sequence[int], session_id: Optional[str] = None) -> Assignment:
        """Bind a sequence id to a new request whose prompt is `prompt`. The returned entry holds
        prompt[:n_cached] in cells and lists the whole prompt in `tokens`. Needs a non-active seq."""
        src, n = self.match(prompt, session_id)
        if src is not None and not src.active and n > 0:
            own = session_id is not None and self._sessions.get(session_id) is src
            keep_src = src.n_cells > n and not own and self._free_entry() is not None
            if keep_src:  # keep the longer idle history for later; share its prefix
                dst = self._take_free(exclude=src)
                self._ctx.seq_cp(src.seq_id, dst.seq_id, 0, n)
            else:         # take the idle sequence over, dropping its tail
                dst = src
                self._trim(dst, n)
        elif src is not None and n > 0:  # running source: share its first n cells
            dst = self._take_free(exclude=src)
            self._ctx.seq_cp(src.seq_id, dst.seq_id, 0, n)
        else:
            dst, n = self._take_free(exclude=None), 0
        dst.tokens = list(prompt)
        dst.n_cells = n
        dst.active = True
        if src is not None and n > 0:
            self._touch(src)
        if session_id is not None:
            self._pin(dst, session_id)
        return Assignment(dst, n)

    def release(self, entry: SeqEntry, keep: int) -> None:
        """The request on `entry` is done: keep its first `keep` cells as an idle cached sequence
        (keep=0 frees the sequence). keep <= entry.n_cells."""
        keep = max(0, min(keep, entry.n_cells))
        entry.active = False
        self._trim(entry, keep)
        if keep == 0:
            self._unpin(entry)
        self._touch(entry)

    def evict_lru(self) -> bool:
        """Drop the least recently used idle sequence; False if none is idle."""
        idle = self.idle()
        if not idle:
            return False
        victim = min(idle, key=lambda e: e.last_used)
        self._trim(victim, 0)
        self._unpin(victim)
        return True

    def rollback(self, entry: SeqEntry) -> None:
        """Remove the cells a failed decode placed for `entry` past its committed n_cells."""
        self._ctx.seq_rm(entry.seq_id, entry.n_cells, -1)

    def clear(self) -> None:
        """Forget everything (after a failed decode left the cache in an unknown state)."""
        self._ctx.kv_clear()
        for e in self.entries:
            e.tokens, e.n_cells, e.active, e.session_id = [], 0, False, None
        self._sessions.clear()

    # -- helpers
    def _free_entry(self) -> Optional[SeqEntry]:
        for e in self.entries:
            if not e.active and e.n_cells == 0:
                return e
        return None

    def _take_free(self, exclude: Optional[SeqEntry]) -> SeqEntry:
        """An empty, non-active entry, evicting the LRU idle one (never `exclude`) if needed."""
        e = self._free_entry()
        if e is not None:
            return e
        idle = [e for e in self.idle() if e is not exclude]
        if not idle:
            raise RuntimeError("no sequence id left: every sequence is running")
        victim = min(idle, key=lambda e: e.last_used)
        self._trim(victim, 0)
        self._unpin(victim)
        return victim

    def _trim(self, e: SeqEntry, n: int) -> None:
        """Keep positions 0..n-1 of `e`, removing the rest of its cells."""
        if e.n_cells > n:
            self._ctx.seq_rm(e.seq_id, n, -1)
        e.n_cells = min(e.n_cells, n)
        del e.tokens[n:]

    def _touch(self, e: SeqEntry) -> None:
        self._tick += 1
        e.last_used = self._tick

    def _pin(self, e: SeqEntry, session_id: str) -> None:
        old = self._sessions.get(session_id)
        if old is not None and old is not e and old.session_id == session_id:
            old.session_id = None
        self._unpin(e)
        e.session_id = session_id
        self._sessions[session_id] = e

    def _unpin(self, e: SeqEntry) -> None:
        if e.session_id is not None and self._sessions.get(e.session_id) is e:
            del self._sessions[e.session_id]
        e.session_id = None
