"""Budget-aware closing of a grammar: the shortest way found to a complete output, so a
constrained reply ends valid (e.g. a JSON value closed) before max_tokens cuts it.

Owns: ClosingSearch (per model: the single-character token ids tried, in preference order) and
its search: a depth-first walk over deep copies of a request's llguidance matcher that at each
state tries the allowed single-character tokens in a fixed order (closers first: `"`, `}`, `]`,
then separators, digits, letters, the rest of printable ASCII), backtracking within a node
budget, until the matcher accepts; and closing_token(slot), which the engine asks before it
samples a constrained row: it forces that path once the request's remaining budget is about
as long as the path.
Must not: sample, or advance the request's own matcher (only copies are walked).
"""

from __future__ import annotations

import string
import time
from typing import Any, Optional

import numpy as np

# tried in this order at every state: what closes first, then what fills a required slot with
# the least (a separator, a digit, a letter), then anything printable
PREFERRED = '"}],' + " :" + "0123456789" + "@-." + string.ascii_lowercase + string.ascii_uppercase
ORDER = PREFERRED + "".join(c for c in map(chr, range(0x20, 0x7F)) if c not in PREFERRED)
NODE_BUDGET = 400   # matcher copies per walk (each costs one mask: ~0.01-1 ms)
FEW = 3             # fewer allowed single characters than this: also try the other allowed tokens
FEW_ALLOWED = 64    # ... if the grammar allows at most this many
CLOSE_SLACK = 4     # tokens: start a closing path this much before the budget requires it
CLOSE_NOW = -1      # closing_token: the output is complete, finish now


def closing_token(slot: Any) -> Optional[int]:
    """The next token of the slot's forced closing path, None to sample, or CLOSE_NOW (the
    output is complete and may stop here). When at most slot.close_at tokens are left, search
    the shortest closing path found; force it once the budget left is within CLOSE_SLACK of its
    length (a sampled token may open more). A search that finds nothing is retried on later
    steps, a few times and within the slot's time budget (engine/slot.py close_*)."""
    if slot.closing:
        return slot.closing.pop(0)
    left = slot.req.max_tokens - slot.n_gen
    if slot.close_at <= 0 or left > slot.close_at:
        return None
    t0 = time.perf_counter_ns()
    try:
        path = slot.grammar.closing_path(left)
    except Exception:  # never let the search fail a request: sample as before
        path = None
    slot.close_ns -= time.perf_counter_ns() - t0
    if path is None:
        slot.close_tries -= 1
        slot.close_at = left - 1 if slot.close_tries > 0 and slot.close_ns > 0 else 0
        return None
    if len(path) + CLOSE_SLACK < left:
        slot.close_at = len(path) + CLOSE_SLACK  # search again when that few are left
        return None
    slot.closing = path
    return slot.closing.pop(0) if path else CLOSE_NOW


class ClosingSearch:
    """The candidate tokens of one vocabulary: for each character of ORDER, a token whose bytes
    are exactly that character (characters without such a token are left out)."""

    def __init__(self, tokenizer: Any, n_vocab: int, special: set[int]):
        by_bytes: dict[bytes, int] = {}
        for i in range(min(n_vocab, tokenizer.n_vocab)):
            if i in special:
                continue
            b = tokenizer.token_bytes(i)
            if len(b) == 1 and b not in by_bytes:
                by_bytes[b] = i
        self.ids = np.array([by_bytes[c.encode()] for c in ORDER if c.encode() in by_bytes],
                            dtype=np.int64)                     # (n_candidates,) in ORDER
        self.n_words = (n_vocab + 31) // 32
        self.token_bytes = tokenizer.token_bytes

    def path(self, matcher: Any, max_len: int) -> Optional[list[int]]:
        """Token ids (<= max_len) that take `matcher` (not modified) to an accepting state, or
        None if none was found within the node budget ([] if it already accepts). A quick walk
        first; if it finds nothing, a walk that looks one token ahead and tries first what
        changes the state (out of a loop such as an e-mail's local part, towards its '@')."""
        if matcher.is_accepting():
            return []
        words = np.zeros(self.n_words, dtype=np.int32)  # (n_words,) scratch mask
        for ahead in (False, True):
            found = self._walk(matcher, max_len, [NODE_BUDGET], words, frozenset(), -1, ahead)
            if found is not None:
                return found
        return None

    def _walk(self, m: Any, depth: int, budget: list[int], words: np.ndarray,
              before: frozenset, prev: int, ahead: bool) -> Optional[list[int]]:
        if depth == 0:
            return None
        cands = self._candidates(m, words)
        here = frozenset(cands)
        if ahead:    # what leads to a state that allows other tokens than this one first
            order = self._changing_first(m, cands, here, words, budget)
        else:        # what this state newly allows first (e.g. '@' once an e-mail's local
            fresh = [t for t in cands if t not in before and t != prev]  # part has a character),
            rest = [t for t in cands if t in before and t != prev]      # the previous token last
            order = fresh + rest + [t for t in cands if t == prev]
        for tid in order:
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            child = m.deep_copy()
            if not child.consume_token(tid):
                continue
            if child.is_accepting():
                return [tid]
            rest_path = self._walk(child, depth - 1, budget, words, here, tid, ahead)
            if rest_path is not None:
                return [tid] + rest_path
        return None

    def _changing_first(self, m: Any, cands: list[int], here: frozenset, words: np.ndarray,
                        budget: list[int]) -> list[int]:
        """cands reordered: those after which the allowed tokens differ from `here` first."""
        changing, same = [], []
        for tid in cands:
            budget[0] -= 1
            child = m.deep_copy()
            if not child.consume_token(tid):
                continue
            if child.is_accepting() or frozenset(self._candidates(child, words)) != here:
                changing.append(tid)
            else:
                same.append(tid)
        return changing + same

    def _candidates(self, m: Any, words: np.ndarray) -> list[int]:
        """The tokens to try next: the allowed single characters in ORDER, then, where the
        grammar allows only a few tokens (forced text such as a required key, which llguidance
        lets through only as its canonical tokens), those, shortest first."""
        m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        single = (words[self.ids >> 5] >> (self.ids & 31)) & 1   # (n_candidates,)
        out = [int(t) for t in self.ids[single.astype(bool)]]
        if len(out) < FEW:
            bits = np.unpackbits(words.view(np.uint8), bitorder="little")
            others = np.flatnonzero(bits)
            if len(others) <= FEW_ALLOWED:
                seen = set(out)
                out += sorted((int(t) for t in others if int(t) not in seen),
                              key=lambda t: len(self.token_bytes(t)))
        return out
