"""PrefixCache and scheduler unit tests on the fake context's cell table (no engine thread)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from fake_core import FakeContext, FakeModel
from lanner.engine.prefix_cache import PrefixCache, common_prefix_len
from lanner.engine.scheduler import build_step


def fill(ctx, entry, tokens):
    """Decode tokens[entry.n_cells:] (the uncached part of `tokens`) as the engine would."""
    n0 = entry.n_cells
    n = len(tokens) - n0
    ctx.decode(np.asarray(tokens[n0:], np.int32), np.arange(n0, n0 + n, dtype=np.int32),
               np.full(n, entry.seq_id, np.int32), np.zeros(n, np.bool_))
    entry.n_cells += n
    entry.tokens = list(tokens)


def setup(n_seq=4, n_ctx=512):
    ctx = FakeContext(FakeModel(64), n_ctx=n_ctx, n_seq_max=n_seq)
    return ctx, PrefixCache(ctx, n_seq)


def test_common_prefix_len_long_and_short():
    a = list(range(1000))
    b = list(range(700)) + [5] * 10
    assert common_prefix_len(a, b, 10_000) == 700
    assert common_prefix_len(a, b, 300) == 300
    assert common_prefix_len(a, a, 999) == 999
    assert common_prefix_len([], a, 5) == 0


def test_take_over_idle_then_share_running_with_seq_cp():
    ctx, pc = setup()
    p1 = [0] + list(range(2, 30))
    a = pc.acquire(p1)
    assert a.n_cached == 0
    fill(ctx, a.entry, p1)
    pc.release(a.entry, a.entry.n_cells)
    # continuation: takes the idle sequence over
    p2 = p1 + [40, 41]
    b = pc.acquire(p2)
    assert b.entry is a.entry and b.n_cached == len(p1)
    fill(ctx, b.entry, p2)
    # concurrent request with the same prefix: shares the running sequence's cells
    used = ctx.n_cells_used()
    c = pc.acquire(p1[:20] + [50])
    assert c.entry is not b.entry and c.n_cached == 20
    assert ctx.n_cells_used() == used
    assert ctx.history(c.entry.seq_id) == p1[:20]


def test_partial_match_keeps_longer_idle_history_when_a_seq_is_free():
    ctx, pc = setup()
    p1 = [0] + list(range(2, 40))
    a = pc.acquire(p1)
    fill(ctx, a.entry, p1)
    pc.release(a.entry, a.entry.n_cells)
    b = pc.acquire(p1[:10] + [60, 61])
    assert b.entry is not a.entry and b.n_cached == 10
    assert ctx.history(a.entry.seq_id) == p1  # kept for its own conversation
    assert ctx.history(b.entry.seq_id) == p1[:10]


def test_whole_prompt_match_leaves_the_last_token_to_compute():
    ctx, pc = setup()
    p = [0, 5, 6, 7]
    a = pc.acquire(p)
    fill(ctx, a.entry, p)
    pc.release(a.entry, 4)
    b = pc.acquire(p)
    assert b.n_cached == 3 and ctx.seq_pos_max(b.entry.seq_id) == 2


def test_session_pin_wins_over_a_longer_match():
    ctx, pc = setup()
    base = [0] + list(range(2, 20))
    s = pc.acquire(base[:8] + [50], session_id="s1")
    fill(ctx, s.entry, base[:8] + [50])
    pc.release(s.entry, s.entry.n_cells)
    o = pc.acquire(base)
    fill(ctx, o.entry, base)
    pc.release(o.entry, o.entry.n_cells)
    got = pc.acquire(base + [60], session_id="s1")
    assert got.entry is s.entry and got.n_cached == 8
    got2 = pc.acquire(base + [61])  # no session: longest match
    assert got2.entry is o.entry and got2.n_cached == len(base)


def test_lru_eviction_and_release_without_keep():
    ctx, pc = setup(n_seq=2)
    ents = []
    for k in range(2):
        p = [3 + k, 10 + k, 20 + k]
        a = pc.acquire(p)
        fill(ctx, a.entry, p)
        pc.release(a.entry, 3)
        ents.append(a.entry)
    assert ctx.n_cells_used() == 6
    assert pc.evict_lru()
    assert ents[0].n_cells == 0 and ents[1].n_cells == 3 and ctx.n_cells_used() == 3
    pc.release(pc.acquire([5, 10, 77]).entry, 0)  # cancelled without cells of its own
    assert ctx.n_cells_used() == 3


def test_build_step_decode_first_then_prompt_chunks_within_budget():
    def slot(seq, tokens, n_cells, n_prompt):
        entry = SimpleNamespace(seq_id=seq, tokens=tokens, n_cells=n_cells)
        s = SimpleNamespace(entry=entry, seq_id=seq, n_prompt=n_prompt)
        s.prefill_left = max(n_prompt - n_cells, 0)
        s.has_pending = n_cells >= n_prompt and len(tokens) > n_cells
        return s

    gen = slot(0, list(range(10)) + [33], 10, 10)     # one pending token at pos 10
    pre1 = slot(1, list(range(100)), 20, 100)         # 80 prompt tokens left
    pre2 = slot(2, list(range(5)), 0, 5)
    b = build_step([pre1, gen, pre2], budget=50, max_cells=1000)
    assert b.tokens[0] == 33 and b.pos[0] == 10 and b.seq_id[0] == 0
    assert b.n_decode == 1 and b.n_prefill == 49 and b.n_tokens == 50
    assert b.pos[1:].tolist() == list(range(20, 69)) and not b.want_logits[1:].any()
    assert b.rows == [gen] and b.commits == [(gen, 1), (pre1, 49)]
    b = build_step([pre1, gen, pre2], budget=200, max_cells=1000)
    assert b.rows == [gen, pre1, pre2] and int(b.want_logits.sum()) == 3
    assert b.n_tokens == 1 + 80 + 5
    b = build_step([pre1, gen, pre2], budget=200, max_cells=11)  # free cells bound the chunk
    assert b.n_tokens == 11
