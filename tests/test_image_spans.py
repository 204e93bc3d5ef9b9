"""Image spans in token lists (engine/image_spans.py): ids keyed by pixels, spans kept whole by
the prefix cache's matches and the scheduler's prompt chunks, the core's decode arguments."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lanner.engine.image_spans import (check_prompt, decode_args, index_of, key_of, span_ids,
                                       span_safe, spans)
from lanner.engine.scheduler import build_step

K1, K2 = 123456789, (1 << 46) - 1


def _prompt():
    return [2, 10, 11] + span_ids(K1, 4) + [12] + span_ids(K2, 3) + span_ids(K1, 4) + [13, 14]


def test_ids_round_trip_and_spans():
    ids = span_ids(K2, 3)
    assert [(key_of(t), index_of(t)) for t in ids] == [(K2, 0), (K2, 1), (K2, 2)]
    assert spans(_prompt()) == [(3, 4, K1), (8, 3, K2), (11, 4, K1)]
    with pytest.raises(ValueError):
        span_ids(1 << 46, 1)


@pytest.mark.parametrize("n, want", [(0, 0), (3, 3), (4, 3), (6, 3), (7, 7), (8, 8), (9, 8), (11, 11),
                                     (12, 11), (15, 15), (17, 17)])
def test_span_safe_never_cuts_a_span(n, want):
    assert span_safe(_prompt(), n) == want


def test_check_prompt():
    p = _prompt()
    rows = {K1: np.zeros((4, 8), np.float32), K2: np.zeros((3, 8), np.float32)}
    assert check_prompt(p, rows, 100, 512) is None
    assert "no embeddings" in check_prompt(p, {K1: rows[K1]}, 100, 512)
    assert "4 tokens but its image 3" in check_prompt(p, {K1: rows[K2], K2: rows[K2]}, 100, 512)
    assert "whole spans" in check_prompt(p[:5] + p[6:], rows, 100, 512)
    assert "does not fit one decode call" in check_prompt(p, rows, 100, 3)
    assert "vocabulary" in check_prompt(p + [100], rows, 100, 512)
    assert "vocabulary" in check_prompt([1, -5], {}, 100, 512)


def test_decode_args_rows_and_bidirectional_blocks():
    p = _prompt()
    r1 = np.arange(32, dtype=np.float32).reshape(4, 8)
    r2 = -np.arange(24, dtype=np.float32).reshape(3, 8)
    toks, pos = np.asarray(p, np.int64), np.arange(len(p), dtype=np.int32)
    a = decode_args(toks, pos, {K1: r1, K2: r2}, bidirectional=True)
    assert (a["tokens"] == np.where(toks < 0, -1, toks)).all() and a["tokens"].dtype == np.int32
    np.testing.assert_array_equal(a["embd"], np.concatenate([r1, r2, r1]))
    want = pos.copy()
    want[3:7], want[8:11], want[11:15] = 6, 10, 14
    np.testing.assert_array_equal(a["attn_end"], want)
    assert "attn_end" not in decode_args(toks, pos, {K1: r1, K2: r2}, bidirectional=False)


def _slot(tokens, n_cells=0, seq=0):
    entry = SimpleNamespace(tokens=list(tokens), n_cells=n_cells, seq_id=seq)
    return SimpleNamespace(entry=entry, seq_id=seq, has_pending=False,
                           prefill_left=len(tokens) - n_cells)


def test_prompt_chunks_end_outside_spans():
    s = _slot(_prompt())
    b = build_step([s], budget=5, max_cells=100)  # 5 would cut the first image: 3 tokens go
    assert b.n_tokens == 3 and b.tokens.dtype == np.int64
    s.entry.n_cells, s.prefill_left = 3, len(_prompt()) - 3
    b = build_step([s], budget=2, max_cells=100)  # the span is longer than the budget: taken whole
    assert b.n_tokens == 4 and (b.tokens < 0).all()
    assert build_step([s], budget=2, max_cells=3).n_tokens == 0  # but never past the free cells
