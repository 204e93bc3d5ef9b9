"""lanner's register-tiled quantized matmul (csrc/kernels/mul_mat_q.*) against ggml_mul_mat, bit for bit.

The kernel reads each weight block once for several columns, but keeps for every output element
the arithmetic of ggml's AVX2 dot product for the type, so its results must equal ggml_mul_mat's
exactly: for every supported type, tile remainders (odd rows, 1-3 leftover columns, past the
64-column block), several thread counts, its scalar build, and inside real models' graphs
(LANNER_MM_Q=0 switches it off). Being the same bits for any number of columns, it keeps batch
invariance; a numpy product on the dequantized weights checks both are the right product.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants

import lanner._core as core

TYPES = ["Q8_0", "Q4_0", "Q5_0", "Q4_1", "Q4_K", "Q6_K"]


def _k_rows(rng, name: str, N: int, K: int) -> bytes:
    """Random K-quant rows (gguf cannot quantize to them): random quants, scales and mins,
    finite positive fp16 super-block scales of varied size (Q4_K: d, dmin first; Q6_K: d last)."""
    size, n_half = {"Q4_K": (144, 2), "Q6_K": (210, 1)}[name]
    blocks = rng.integers(0, 256, (N * K // 256, size), dtype=np.uint8)
    dd = (rng.uniform(0.2, 2.0, (len(blocks), n_half)) * 10.0 ** rng.integers(-3, 0, (len(blocks), 1))).astype(np.float16)
    if name == "Q4_K":
        blocks[:, :4] = dd.view(np.uint8)
    else:
        blocks[:, -2:] = dd.view(np.uint8)
    return blocks.tobytes()


def _case(name: str, K: int, N: int, M: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    qt = getattr(Q, name)
    if name in ("Q4_K", "Q6_K"):
        K = max(256, K // 256 * 256)
        wq = _k_rows(rng, name, N, K)
        x = rng.standard_normal((M, K)).astype(np.float32)
        x[:, :32] *= 40.0
        wd = quants.dequantize(np.frombuffer(wq, np.uint8).reshape(N, -1), qt)
        return int(qt), wq, x, wd
    w = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.1, 3.0, (N, 1)).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[:, :32] *= 40.0  # blocks of very different scales
    return int(qt), quants.quantize(w, qt).tobytes(), x, quants.dequantize(quants.quantize(w, qt), qt)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("K,N,M", [(32, 1, 1), (64, 7, 3), (576, 37, 5), (640, 64, 9), (256, 33, 70),
                                   (1536, 10, 2), (96, 5, 131),
                                   # single columns (a decode step): 4-row passes (Q8_0: 1) with prefetching,
                                   # a remainder of 1-3 rows, row ranges split over 1-3 threads
                                   (576, 37, 1), (640, 70, 1), (2048, 23, 1)])
def test_every_path_gives_ggml_bits(name, K, N, M):
    qt, w, x, _ = _case(name, K, N, M)
    ref = core.mul_mat_q_check(qt, w, x, "ggml", 1)
    assert ref.shape == (M, N)
    for how, threads in [("op", 1), ("op", 2), ("op", 3), ("avx2", 1), ("scalar", 1)]:
        got = core.mul_mat_q_check(qt, w, x, how, threads)
        diff = int((_bits(got) != _bits(ref)).sum())
        assert diff == 0, f"{how} x{threads}: {diff} of {ref.size} outputs differ from ggml_mul_mat"


AVX512 = core.mul_mat_q_isa_available("avx512")


@pytest.mark.skipif(not AVX512, reason="this CPU lacks AVX-512 (F/BW/DQ/VL + VNNI): the op runs its AVX2 build, "
                                       "which test_every_path_gives_ggml_bits checks")
@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("K,N,M", [(64, 7, 3), (576, 37, 5), (640, 64, 9), (256, 33, 70), (1536, 10, 2),
                                   (96, 5, 131), (640, 11, 8), (32, 4, 16), (640, 70, 1)])
def test_avx512_build_gives_ggml_bits(name, K, N, M):
    """Two columns per 512-bit register, 4 x 8 tiles with every remainder of rows (1-3) and
    columns (odd ones go to the AVX2 tile), past the 64-column block."""
    qt, w, x, _ = _case(name, K, N, M, seed=5)
    ref = core.mul_mat_q_check(qt, w, x, "ggml", 1)
    got = core.mul_mat_q_check(qt, w, x, "avx512", 1)
    assert np.array_equal(_bits(got), _bits(ref))


@pytest.mark.parametrize("how", ["avx512", "avx2", "scalar"])
def test_q8_0_at_the_extremes(how):
    """Q8_0 weights of -128 (a file may hold them; ggml never writes them) against columns at
    +-127: the largest pair sums (128 * 127 * 2 = 32512) stay within int16 in maddubs, so every
    build still equals ggml."""
    if not core.mul_mat_q_isa_available(how):
        pytest.skip(f"this CPU cannot run the {how} build")
    K, N, M = 128, 6, 6
    blocks = np.zeros((N, K // 32, 34), np.uint8)
    blocks[:, :, :2] = np.array([0.5], np.float16).view(np.uint8)
    blocks[:, :, 2:] = np.uint8(0x80)  # -128
    blocks[1::2, :, 2::3] = np.uint8(127)
    x = np.where(np.arange(K) % 2 == 0, 3.0, -3.0).astype(np.float32) * np.array([[1], [-1], [1], [-1], [1], [-1]], np.float32)
    w = blocks.tobytes()
    ref = core.mul_mat_q_check(int(Q.Q8_0), w, x, "ggml", 1)
    got = core.mul_mat_q_check(int(Q.Q8_0), w, x, how, 1)
    assert np.array_equal(_bits(got), _bits(ref))


@pytest.mark.parametrize("how", ["avx512", "avx2", "scalar"])
@pytest.mark.parametrize("name", ["Q4_K", "Q6_K"])
def test_k_quant_columns_at_the_edges_of_their_quantization(name, how):
    """X's super-blocks of 256 quantized to Q8_K (the AVX-512 build quantizes them itself, as
    ggml's reference does): an all-zero block, the largest magnitude twice with both signs (the
    first sets the scale's sign), and products landing on .5 (round half to even)."""
    if not core.mul_mat_q_isa_available(how):
        pytest.skip(f"this CPU cannot run the {how} build")
    rng = np.random.default_rng(9)
    K, N, M = 1024, 8, 6
    x = rng.uniform(-1, 1, (M, K)).astype(np.float32)
    x[:, :256] = 0.0                        # block 0: zeros
    x[:, 256 + 5], x[:, 256 + 9] = -3.0, 3.0  # block 1: -max first
    x[:, 512 + 3], x[:, 512 + 200] = 2.0, -2.0
    x[:, 768:] = (np.arange(256) % 7 - 3 + 0.5).astype(np.float32)  # block 3: iscale = -127 / 3.5
    x[:, 768] = -127.0                      # now iscale = 1: every other value is k + 0.5
    x[:, 256 + 7] = x[:, 512 - 16:512] = np.nan  # NaNs take no part in the max (block 1's -3 still leads)
    qt = int(getattr(Q, name))
    w = _k_rows(rng, name, N, K)
    ref = core.mul_mat_q_check(qt, w, x, "ggml", 1)
    got = core.mul_mat_q_check(qt, w, x, how, 1)
    assert np.array_equal(_bits(got), _bits(ref))


@pytest.mark.parametrize("name", TYPES)
def test_it_is_the_product_of_the_dequantized_weights(name):
    qt, w, x, wd = _case(name, 640, 48, 6, seed=3)
    got = core.mul_mat_q_check(qt, w, x, "op", 2).astype(np.float64)
    want = x.astype(np.float64) @ wd.astype(np.float64).T  # activations quantized to 8 bits: ~1% error
    rel = np.abs(got - want).max() / np.abs(want).max()
    # K-quants quantize activations per 256 (one scale for the 40x block and its quiet neighbours)
    assert rel < (0.05 if name.endswith("_K") else 0.02), rel


@pytest.mark.parametrize("name", TYPES)
def test_a_column_alone_equals_the_same_column_in_a_batch(name):
    qt, w, x, _ = _case(name, 576, 40, 11, seed=5)
    batch = core.mul_mat_q_check(qt, w, x, "op", 2)
    for c in (0, 3, 4, 10):
        alone = core.mul_mat_q_check(qt, w, x[c:c + 1], "op", 2)
        assert np.array_equal(_bits(alone[0]), _bits(batch[c]))


def test_unsupported_types_are_refused():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    w = rng.standard_normal((4, 256)).astype(np.float16).tobytes()
    assert core.mul_mat_q_check(int(Q.F16), w, x, "ggml", 1).shape == (2, 4)
    for how in ("op", "avx2", "scalar"):
        with pytest.raises(ValueError, match="unsupported"):
            core.mul_mat_q_check(int(Q.F16), w, x, how, 1)
    with pytest.raises(ValueError, match="whole number"):  # a Q4_K row must be whole 256-blocks
        core.mul_mat_q_check(int(Q.Q4_K), b"\0" * 144, x[:, :64], "op", 1)
    with pytest.raises(ValueError, match="how must be"):
        core.mul_mat_q_check(int(Q.Q8_0), b"\0" * 34 * 8, x, "fast", 1)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request):
    from lanner.default_model import gemma3_path, smollm2_path

    return core.Model(str(smollm2_path() if request.param == "smollm2" else gemma3_path()))


def _logits(model, on: bool, monkeypatch) -> tuple[bool, list[np.ndarray]]:
    monkeypatch.setenv("LANNER_MM_Q", "1" if on else "0")
    c = core.Context(model, n_ctx=512, n_batch=64, n_seq_max=4, n_threads=2)
    rng = np.random.default_rng(11)
    toks = lambda n: rng.integers(10, 20000, n).astype(np.int32)  # noqa: E731
    outs, lens, ops = [], {0: 150, 1: 40, 2: 7}, []
    for s, n in lens.items():  # prompts in 64-token chunks: 64-, 22- and 7-column matmuls
        out = c.decode(toks(n), np.arange(n, dtype=np.int32), np.full(n, s, np.int32), np.ones(n, np.uint8))
        outs.append(out.copy())
        ops.append(c.last_mm_q_ops)
    for _ in range(4):  # batched decode steps: 3 columns
        seqs = np.array(sorted(lens), np.int32)
        pos = np.array([lens[s] for s in seqs], np.int32)
        outs.append(c.decode(toks(len(seqs)), pos, seqs, np.ones(len(seqs), np.uint8)).copy())
        for s in lens:
            lens[s] += 1
        ops.append(c.last_mm_q_ops)
    for _ in range(2):  # one sequence alone: single-column matmuls
        outs.append(c.decode(toks(1), np.array([lens[0]], np.int32), np.zeros(1, np.int32),
                             np.ones(1, np.uint8)).copy())
        lens[0] += 1
        ops.append(c.last_mm_q_ops)
    return c.mm_q, ops, outs


def test_models_give_the_same_logits_with_and_without_the_kernel(model, monkeypatch):
    on, ops_on, with_op = _logits(model, True, monkeypatch)
    off, ops_off, without = _logits(model, False, monkeypatch)
    assert on and not off
    # every layer's projections and FFN (and the output head where its type is supported) took the op
    assert min(ops_on) >= 4 * model.n_layer and max(ops_off) == 0, (ops_on, ops_off)
    for a, b in zip(with_op, without):
        assert np.array_equal(_bits(a), _bits(b))
