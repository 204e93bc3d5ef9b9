"""The native core against the numpy reference in its ggml-emulating mode: agreement to the bit.

ReferenceModel(path, emulate_ggml=True) (tests/reference/ggml_numerics.py) computes the same
graph as the float32 reference but with ggml's CPU arithmetic: 8-bit activations and the AVX2
kernels' summation order in every quantized matmul, the f16 KV cache and f16 attention
accumulator, the f16 GELU table, float32 RoPE angles, the same libm calls. Every layer is then
bit-identical to the core's, and the logits differ only by the summation order of the vocabulary
projection, which the reference does with BLAS. Measured (4 prompts x 2 models x both attention
paths, n_threads=2): max |logit difference| 1.9e-5 to 4.6e-5 (logits are ~10-30), 1 - cosine
<= 1e-12 per position, the same argmax at every position. The float32 reference on the same runs
(tests/test_core_reference.py): 1 - cosine up to 1.4e-2, max difference 0.9 to 3.1.

Why nothing looser works: ggml's activation rounding is discontinuous, so any arithmetic that
differs even at float32 rounding level flips occasional 8-bit roundings, and the flips spread;
after 3-5 layers an emulation that only reproduced the roundings (float32 BLAS order) was as far
from the core as the plain float32 reference (min cosine 0.979-0.998), and as far from itself
when only its matmul accumulation precision changed. Hence the thresholds below (max |d| < 1e-3,
cosine > 1 - 1e-9, same argmax everywhere) leave room for the last matmul's order only. What
they catch, measured by altering the reference on the first prompt: an RMS eps 1% off, a RoPE
base 0.01% off, an attention scale 1e-6 off, or the flash V accumulator in float32 instead of
f16 each give max |d| 1.2-1.5 (1 - cosine 2e-3 to 1.4e-2), inside the float32 test's own noise;
leaving one 8-bit rounding out (last layer's ffn_down input) gives 0.35-0.6.

Scope: the CPU backend of the pinned ggml build (libggml-python 0.20.2.post1: ggml 8c63e70, AVX2)
with weights in the plain CPU buffer (Model(repack=False), the default: repacked weights, e.g.
Q4_K as q4_K_8x8, run kernels the emulation does not reproduce). Skipped with another ggml build
or on a GPU, which sum in another order. The op-level tests run each emulated op against that same libggml
through ctypes (tests/reference/ggml_ops.py): when ggml changes they fail too; when only the model
tests fail, the core's graph changed. A tiny random llama in each weight type the real models
lack (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) runs through the core the same way (measured
max |d| <= 3.8e-6).
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

import lanner._core as core
from lanner.text.tokenizer import Tokenizer
from reference import ggml_numerics as gn
from reference.numpy_forward import ReferenceModel, causal_mask
from test_core_reference import PROMPTS, _decode  # the same prompts and layouts as the float32 test

GGML_PIN = "0.20.2.post1"  # libggml-python, see third_party/README.md



def _pinned_ggml() -> None:
    try:
        version = importlib.metadata.version("libggml-python")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != GGML_PIN:
        pytest.skip(f"the emulation follows libggml-python {GGML_PIN}; found {version}")


# ---------------------------------------------------------------------------------------------
# op level: the emulation against libggml itself


def _random_rows(qtype, n_rows: int, n_in: int, rng) -> np.ndarray:
    """Random raw rows of a weight type: normal values for F32/F16/BF16; for quant types random
    bytes (every bit pattern is a valid quant) with sane f16 scales d, m, dmin in [0.005, 0.02]."""
    from gguf import GGML_QUANT_SIZES

    if qtype.name in ("F32", "F16", "BF16"):
        w = rng.standard_normal((n_rows, n_in)).astype(np.float32)
        if qtype.name == "F16":
            return w.astype(np.float16).view(np.uint8)
        if qtype.name == "BF16":
            return (gn.bf16_round(w).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return w.view(np.uint8)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_rows, n_in // block, size), dtype=np.uint8)
    # byte offsets of the f16 fields: d everywhere, m (Q4_1/Q5_1) and dmin (Q4_K) at 2
    f16_at = {"Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q6_K": (208,)}.get(qtype.name, (0,))
    for at in f16_at:
        d = rng.uniform(0.005, 0.02, raw.shape[:2]).astype(np.float16)
        raw[..., at:at + 2] = d[..., None].view(np.uint8)
    return raw.reshape(n_rows, -1)


@pytest.mark.parametrize("qtype", gn.SUPPORTED_WEIGHT_TYPES, ids=lambda t: t.name)
def test_matmul_matches_ggml_bitwise(qtype):
    _pinned_ggml()
    from reference.ggml_ops import GgmlContext

    rng = np.random.default_rng(int(qtype))
    n_in, n_out, n = 512 + (16 if qtype.name in ("F32", "F16", "BF16") else 0), 48, 7  # + a tail
    raw = _random_rows(qtype, n_out, n_in, rng)
    x = (rng.standard_normal((n, n_in)) * rng.uniform(0.1, 4, (n, 1))).astype(np.float32)
    x[0, :40] = 0.0  # an all-zero block
    with GgmlContext() as g:
        want = g.run(g.mul_mat(g.tensor(raw, int(qtype), ne=[n_in, n_out]), g.tensor(x)), (n, n_out))
    got = gn.matmul_exact(x, gn.decode_weight(raw, qtype), qtype)
    assert np.array_equal(got, want), f"max |d| {np.abs(got - want).max():.3e}"
    # the vocabulary-projection shortcut: same rounding, BLAS order
    from gguf.quants import dequantize

    fast = gn.matmul_fast(x, dequantize(raw, qtype).astype(np.float32).reshape(n_out, n_in), raw, qtype)
    np.testing.assert_allclose(fast, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_elementwise_ops_match_ggml_bitwise():
    _pinned_ggml()
    from reference.ggml_ops import I32, GgmlContext

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((9, 1536)) * 4).astype(np.float32)
    x[0, :6] = [-100.0, 95.0, 0.0, -10.0, 10.0, 1e-30]
    up = rng.standard_normal((9, 1536)).astype(np.float32)
    w = rng.uniform(0.5, 2, 1536).astype(np.float32)
    with GgmlContext() as g:
        norm = g.run(g.mul(g.rms_norm(g.tensor(x), 1e-6), g.tensor(w)), x.shape)
        swiglu = g.run(g.swiglu_split(g.tensor(x), g.tensor(up)), x.shape)
        geglu = g.run(g.geglu_split(g.tensor(x), g.tensor(up)), x.shape)
    assert np.array_equal(gn.rms_norm(x, w, 1e-6), norm)
    assert np.array_equal(gn.swiglu(x, up), swiglu)
    assert np.array_equal(gn.geglu(x, up), geglu)
    n = 23
    for mode, base, head_dim in ((0, 100000.0, 64), (2, 10000.0, 256), (2, 1e6, 256)):
        q = rng.standard_normal((n, 3, head_dim)).astype(np.float32)
        with GgmlContext() as g:
            pos = g.tensor(np.arange(n, dtype=np.int32), I32)
            rope = g.run(g.rope_ext(g.tensor(q), pos, None, head_dim, mode, 8192, base, 1.0, 0.0,
                                    1.0, 32.0, 1.0), q.shape)
        assert np.array_equal(gn.apply_rope(q, n, head_dim, base, 1.0, mode == 2), rope), (mode, base)


@pytest.mark.parametrize("shape", [(20, 9, 3, 64), (23, 4, 1, 256)], ids=["llama", "gemma"])
def test_attention_matches_ggml_bitwise(shape):
    _pinned_ggml()
    from reference.ggml_ops import F16, GgmlContext, flash_attn_set_prec_f32

    n, n_head, n_head_kv, hd = shape
    rng = np.random.default_rng(n)
    q = (rng.standard_normal((n, n_head, hd)) * 2).astype(np.float32)
    k = (rng.standard_normal((n, n_head_kv, hd)) * 2).astype(np.float32)
    v = rng.standard_normal((n, n_head_kv, hd)).astype(np.float32)
    scale = float(hd ** -0.5)
    visible = causal_mask(n, 0)
    n_kv, first = 32, 3  # keys in cells 3..n+2 of 32, as after another sequence's 3 cells
    cells = first + np.arange(n)
    kc = np.zeros((n_head_kv, n_kv, hd), np.float16)  # ggml [hd, n_kv, n_head_kv]
    vt = np.zeros((n_head_kv, hd, n_kv), np.float16)  # transposed V: [n_kv, hd, n_head_kv]
    kc[:, cells] = k.transpose(1, 0, 2)
    vt[:, :, cells] = v.transpose(1, 2, 0)
    mask = np.full((n, n_kv), -np.inf, np.float16)
    mask[:, cells] = np.where(visible, 0.0, -np.inf)
    with GgmlContext() as g:
        qt = g.permute(g.tensor(q), 0, 2, 1, 3)  # [hd, n, n_head]
        out = g.flash_attn_ext(qt, g.tensor(kc, F16), g.tensor(vt.transpose(0, 2, 1).copy(), F16),
                               g.tensor(mask, F16), scale, 0.0, 0.0)
        flash_attn_set_prec_f32(out)
        flash = g.run(out, (n, n_head * hd))
        kq = g.soft_max_ext(g.mul_mat(g.tensor(kc, F16), qt), g.tensor(mask, F16), scale, 0.0)
        soft = g.run(g.cont(g.permute(g.mul_mat(g.tensor(vt, F16), kq), 0, 2, 1, 3)), (n, n_head * hd))
    assert np.array_equal(gn.attend_flash(q, k, v, scale, visible, 0.0), flash)
    assert np.array_equal(gn.attend_softmax(q, k, v, scale, visible, cells), soft)


# ---------------------------------------------------------------------------------------------
# model level: the core against the emulating reference


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def pair(request):
    from lanner.default_model import gemma3_path, smollm2_path

    _pinned_ggml()
    path = str(smollm2_path() if request.param == "smollm2" else gemma3_path())
    model = core.Model(path, repack=False)  # repacked weights run kernels not emulated
    if model.device != "CPU":
        pytest.skip(f"the emulation follows ggml's CPU backend; the model is on {model.device}")
    return request.param, path, model, Tokenizer.from_metadata(model.metadata)


@pytest.mark.parametrize("flash_attn", [True, False], ids=["flash", "softmax"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_ggml_emulation(pair, prompt, flash_attn):
    name, path, model, tok = pair
    ids = tok.encode(prompt)
    got = _decode(model, ids, flash_attn).astype(np.float64)
    ref = ReferenceModel(path, emulate_ggml=True, flash_attn=flash_attn,
                         first_kv_cell=0 if flash_attn else 3)
    want = ref.forward(ids).astype(np.float64)
    diff = np.abs(got - want).max(axis=1)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    print(f"{name} flash_attn={flash_attn}: {len(ids)} tokens, max |d| {diff.max():.2e}, "
          f"1 - cosine max {1 - cos.min():.1e}")
    bad = np.nonzero(diff >= 1e-3)[0].tolist()
    assert not bad, f"positions {bad}: max |logit difference| {diff.max():.4g} at {int(diff.argmax())}"
    assert cos.min() > 1 - 1e-9, f"min cosine {cos.min():.12f} at position {int(cos.argmin())}"
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("weight_type", [t.name for t in gn.SUPPORTED_WEIGHT_TYPES
                                         if t.name not in ("Q4_K", "Q6_K")])
def test_tiny_model_each_weight_type_matches_ggml_emulation(tmp_path, weight_type):
    """The weight types the two real models lack (the gguf package cannot write K-quants; the
    real models cover Q4_K and Q6_K): a tiny random llama (head_dim 8, so ggml's scalar tails
    of the f16 dot and V accumulation run too), both attention paths."""
    from tiny_gguf import write_tiny_llama

    _pinned_ggml()
    path = write_tiny_llama(tmp_path / f"tiny-{weight_type}.gguf", weight_type=weight_type)
    model = core.Model(path, repack=False)
    if model.device != "CPU":
        pytest.skip(f"the emulation follows ggml's CPU backend; the model is on {model.device}")
    ids = [1, 5, 9, 33, 2, 60, 17, 8]
    n = len(ids)
    for flash_attn in (True, False):
        ctx = core.Context(model, n_ctx=32, n_batch=32, n_seq_max=1, n_threads=2, flash_attn=flash_attn)
        got = ctx.decode(np.array(ids, np.int32), np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                         np.ones(n, np.uint8))
        want = ReferenceModel(path, emulate_ggml=True, flash_attn=flash_attn).forward(ids)
        diff = np.abs(got - want).max()
        assert diff < 1e-4, (weight_type, flash_attn, diff)  # measured <= 3.8e-6 (logits ~1-3)
