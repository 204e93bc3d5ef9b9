"""Scheduler: builds the one decode batch of a step from the running slots.

Owns: the batch layout. Every slot with a pending sampled token contributes that token (one
logits row); the remaining token budget goes to prompt chunks of slots still in prefill, oldest
first (chunked prefill), with a logits row only on a prompt's last token. Cells are not touched:
the engine commits `commits` after a successful decode. Must not: call the context or sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .image_spans import span_len_at, span_safe
from .slot import Slot


@dataclass
class StepBatch:
    tokens: np.ndarray        # int64 [n] token ids (negative: image rows, see image_spans.py)
    pos: np.ndarray           # int32 [n] positions in their sequence
    seq_id: np.ndarray        # int32 [n]
    want_logits: np.ndarray   # bool  [n]
    rows: list[Slot] = field(default_factory=list)                  # slot of each logits row, in order
    commits: list[tuple[Slot, int]] = field(default_factory=list)   # (slot, tokens whose cells this adds)
    n_decode: int = 0         # tokens of generation (one per decoding slot)
    n_prefill: int = 0        # prompt tokens

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


def build_step(slots: Sequence[Slot], budget: int, max_cells: int) -> StepBatch:
    """Batch for `slots` (in admission order) of at most `budget` tokens, counting decode tokens
    first, and at most `max_cells` tokens in all (free KV cells). Decode tokens always fit
    (the engine makes room for them before calling)."""
    toks: list[int] = []
    pos: list[int] = []
    seqs: list[int] = []
    want: list[bool] = []
    rows: list[Slot] = []
    commits: list[tuple[Slot, int]] = []

    for s in slots:  # generation: one token each, always scheduled
        if s.has_pending:
            p = s.entry.n_cells
            toks.append(s.entry.tokens[p])
            pos.append(p)
            seqs.append(s.seq_id)
            want.append(True)
            rows.append(s)
            commits.append((s, 1))
    n_decode = len(toks)

    room = min(budget, max_cells) - n_decode  # tokens left for prompt chunks
    for s in slots:
        if room <= 0:
            break
        left = s.prefill_left
        if left == 0:
            continue
        p0 = s.entry.n_cells
        n = span_safe(s.entry.tokens, p0 + min(left, room)) - p0  # never cut an image span
        if n == 0:  # an image span starts here and exceeds the room: the cells decide
            n = span_len_at(s.entry.tokens, p0)
            if n == 0 or n > max_cells - len(toks):
                continue
        toks.extend(s.entry.tokens[p0:p0 + n])
        pos.extend(range(p0, p0 + n))
        seqs.extend([s.seq_id] * n)
        last = n == left
        want.extend([False] * (n - 1) + [last])
        if last:
            rows.append(s)
        commits.append((s, n))
        room -= n

    return StepBatch(
        tokens=np.asarray(toks, dtype=np.int64),
        pos=np.asarray(pos, dtype=np.int32),
        seq_id=np.asarray(seqs, dtype=np.int32),
        want_logits=np.asarray(want, dtype=np.bool_),
        rows=rows,
        commits=commits,
        n_decode=n_decode,
        n_prefill=len(toks) - n_decode,
    )
