"""Per-row cell lists attention (csrc/kernels/attn_rows.*) against ggml's masked kernel, bit for bit.

With batch invariance on the CPU, each query row attends only to its own sequence's cells
(a custom op) instead of ggml_flash_attn_ext over all n_kv cells with a mask. It keeps ggml's
reference arithmetic, so logits must equal those of the masked kernel (LANNER_ATTN_ROWS=0)
exactly, here with several interleaved sequences, a prefix shared by seq_cp, chunked prompts,
batched decode steps, and (Gemma 3, window 512) rows whose sliding window drops cells.
"""

from __future__ import annotations

import numpy as np
import pytest

import lanner._core as core


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request):
    from lanner.default_model import gemma3_path, smollm2_path

    return core.Model(str(smollm2_path() if request.param == "smollm2" else gemma3_path()))


def _run(model, rows: bool, monkeypatch) -> tuple[bool, np.ndarray]:
    monkeypatch.setenv("LANNER_ATTN_ROWS", "1" if rows else "0")
    c = core.Context(model, n_ctx=1024, n_batch=256, n_seq_max=6, n_threads=2)
    rng = np.random.default_rng(7)
    toks = lambda n: rng.integers(10, min(model.n_vocab, 20000), n).astype(np.int32)  # noqa: E731
    outs = []
    lens = {0: 530, 1: 100, 2: 30}  # seq 0 passes Gemma 3's 512-position window
    for s, n in lens.items():  # prompts in chunks (256-token ubatches), interleaved cells follow
        out = c.decode(toks(n), np.arange(n, dtype=np.int32), np.full(n, s, np.int32), np.ones(n, np.uint8))
        outs.append(out[::7].copy())
    c.seq_cp(0, 3, -1, 300)  # seq 3 shares seq 0's first 300 positions
    lens[3] = 300
    for _ in range(6):  # batched decode steps: one token per sequence
        seqs = np.array(sorted(lens), np.int32)
        pos = np.array([lens[s] for s in seqs], np.int32)
        outs.append(c.decode(toks(len(seqs)), pos, seqs, np.ones(len(seqs), np.uint8)).copy())
        for s in lens:
            lens[s] += 1
    return c.attn_rows, np.concatenate([o.reshape(-1) for o in outs])


@pytest.mark.parametrize("isa", ["widest", "avx2", "scalar"])
def test_attn_rows_equal_the_masked_kernel_bit_for_bit(model, isa, monkeypatch):
    """Each build of the op's primitives (the widest this CPU runs: AVX-512 or AVX2; AVX2; the
    scalar lanes written out) gives the masked kernel's bits."""
    if isa != "widest":
        monkeypatch.setenv("LANNER_ATTN_ISA", isa)
    on, a = _run(model, True, monkeypatch)
    off, b = _run(model, False, monkeypatch)
    assert on and not off  # the probe really compares the two paths
    assert np.array_equal(a, b)


def test_attn_rows_only_with_batch_invariant_flash_attention(model, monkeypatch):
    monkeypatch.delenv("LANNER_ATTN_ROWS", raising=False)
    mk = lambda **kw: core.Context(model, n_ctx=64, n_batch=32, n_seq_max=2, n_threads=1, **kw)  # noqa: E731
    assert mk().attn_rows
    assert not mk(batch_invariant=False).attn_rows
    assert not mk(flash_attn=False).attn_rows
    assert not mk(type_k="q8_0").attn_rows
