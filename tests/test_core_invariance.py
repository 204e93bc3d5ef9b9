"""Batch invariance of the native core on the real models: a sequence's logits, bit for bit.

Each probe puts one sequence through a situation that used to change the order in which its
attention sum was accumulated: a prompt in one ubatch of >= 64 tokens vs in small chunks
(ggml's tiled kernel), a lone decode token over >= 512 cells vs with a neighbour (ggml's
KV-split kernel), free cells below the sequence's prefix (cells out of position order), and a
fragmented cache that must be compacted; and 2 threads vs 1. With batch_invariant (the default) every probe gives
exactly the reference logits; with it off, the kernel probes must differ (else they probe nothing).
"""

from __future__ import annotations

import numpy as np
import pytest

import lanner._core as core


def _arr(x, dt=np.int32):
    return np.asarray(x, dtype=dt)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request):
    from lanner.default_model import gemma3_path, smollm2_path

    return core.Model(str(smollm2_path() if request.param == "smollm2" else gemma3_path()))


def _ctx(model, n_ctx=1024, n_threads=2, **kw):
    return core.Context(model, n_ctx=n_ctx, n_batch=512, n_seq_max=4, n_threads=n_threads, **kw)


def _decode(c, toks, p0, seq):
    """Decode toks at positions p0.. of `seq`; the last entry's logits."""
    n = len(toks)
    out = c.decode(_arr(toks), _arr(range(p0, p0 + n)), _arr([seq] * n), _arr([0] * (n - 1) + [1], np.uint8))
    return out[-1].copy()


def _prefill(c, toks, seq, chunk):
    """Decode toks from position 0 in chunks of `chunk`; the last entry's logits."""
    for i in range(0, len(toks), chunk):
        out = _decode(c, toks[i:i + chunk], i, seq)
    return out


def _prompt(model, n, seed=0):
    return [int(t) for t in np.random.default_rng(seed).integers(10, min(model.n_vocab, 20000), n)]


def _probes(model, **kw):
    """Name -> (reference logits, probe logits) for each situation."""
    p = _prompt(model, 72)
    r = {}
    for chunk in (72, 16):  # one ubatch of 72 tokens vs chunks of 16, then one more token
        c = _ctx(model, **kw)
        last = _prefill(c, p, 0, chunk)
        r[chunk] = np.stack([last, _decode(c, [5], 72, 0)])
    r["prompt in chunks of 16 vs one ubatch of 72"] = (r[72], r.pop(16))
    c = _ctx(model, n_threads=1, **kw)
    r["2 threads vs 1"] = (r.pop(72), np.stack([_prefill(c, p, 0, 72), _decode(c, [5], 72, 0)]))

    c = _ctx(model, **kw)  # a lone token over few cells, then over >= 512 cells
    _prefill(c, p[:40], 0, 40)
    few = _decode(c, p[40:41], 40, 0)
    c.seq_rm(0, 40, -1)
    _prefill(c, _prompt(model, 460, seed=1), 1, 460)  # a neighbour's cells: 500 in use
    many = _decode(c, p[40:41], 40, 0)
    r["lone decode over 64 vs 512 cells"] = (few, many)
    c.seq_rm(0, 40, -1)
    both = c.decode(_arr([p[40], 7]), _arr([40, 460]), _arr([0, 1]), _arr([1, 1], np.uint8))[0].copy()
    r["lone decode vs with a neighbour token"] = (few, both)

    c = _ctx(model, **kw)  # free cells below the prefix: the next token must not land there
    _prefill(c, _prompt(model, 20, seed=2), 1, 20)  # cells 0..19
    _prefill(c, p[:40], 0, 40)                       # cells 20..59
    c.seq_rm(1)
    r["free cells below the prefix"] = (few, _decode(c, p[40:41], 40, 0))
    return r


def test_probes_are_exact_with_batch_invariance(model):
    for name, (ref, got) in _probes(model).items():
        assert ref.shape == got.shape
        assert np.array_equal(ref, got), f"{name}: max |d logit| {np.abs(ref - got).max():.3g}"


def test_probes_reach_the_shape_dependent_kernels_without_it(model):
    diff = {name: float(np.abs(ref - got).max()) for name, (ref, got) in _probes(model, batch_invariant=False).items()}
    # ggml 0.20.2 picks its tiled kernel at >= 64 query rows, its KV-split one for a lone
    # token over >= 512 cells; if a new ggml stops doing so, these probes need new shapes
    assert diff["prompt in chunks of 16 vs one ubatch of 72"] > 0, diff
    assert diff["lone decode over 64 vs 512 cells"] > 0, diff
    assert diff["free cells below the prefix"] == 0, diff  # placement alone keeps position order


def test_placement_and_compaction_keep_every_sequence_exact(model):
    """Sequences grow past each other's cells; then a full, fragmented cache whose only free
    cells lie below a growing sequence's prefix: the core packs the used cells down (K/V rows
    move with them) and every sequence carries on exactly."""
    pa, pb = _prompt(model, 41, seed=3), _prompt(model, 25, seed=4)
    fill2, fill3 = _prompt(model, 30, seed=5), _prompt(model, 58, seed=6)
    ref = _ctx(model, n_ctx=128)
    want_a = _decode(ref, pa, 0, 0)
    want_b = _decode(ref, pb, 0, 1)
    want_3 = _decode(ref, fill3 + [11], 0, 2)

    c = _ctx(model, n_ctx=128)
    _prefill(c, fill2, 2, 30)     # cells 0..29
    _prefill(c, pa[:40], 0, 40)   # cells 30..69
    _prefill(c, pb[:24], 1, 24)   # cells 70..93
    c.seq_rm(2)                   # free: 0..29 (below both) and 94..127
    assert np.array_equal(want_a, _decode(c, pa[40:41], 40, 0))  # lands above seq 1's cells
    assert np.array_equal(want_b, _decode(c, pb[24:25], 24, 1))
    assert c.kv_compactions == 0

    c = _ctx(model, n_ctx=128)
    _prefill(c, fill2, 2, 30)     # cells 0..29
    _prefill(c, pa[:40], 0, 40)   # cells 30..69
    _prefill(c, fill3, 3, 58)     # cells 70..127: full
    c.seq_rm(2)                   # free: 0..29 only, all below seq 0's prefix
    assert np.array_equal(want_a, _decode(c, pa[40:41], 40, 0))
    assert c.kv_compactions == 1 and c.n_cells_used() == 40 + 58 + 1
    assert c.seq_pos_max(0) == 40 and c.seq_pos_max(3) == 57
    assert np.array_equal(want_3, _decode(c, [11], 58, 3))  # seq 3's rows moved intact
