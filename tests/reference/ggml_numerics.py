"""ggml's CPU arithmetic redone in numpy, bit for bit: the roundings behind ReferenceModel(...,
emulate_ggml=True) (numpy_forward.py).

Why bit for bit: ggml rounds activations to 8 bits before every quantized matmul, and rounding is
discontinuous. A reference that reproduces the roundings but sums in another order differs by
~1e-7 relative, which flips an occasional rounding decision, each flip perturbs the next layer,
and within 3-5 layers the difference is as large as the whole 8-bit noise: measured on the two
real models, such an emulation agreed with the core no better than plain float32 (min cosine
0.979-0.998), and agreed with *itself* no better when only its matmul accumulation changed from
float32 to float64. So every float operation below follows ggml's order, fused multiply-adds,
SIMD lane layout and libm calls; integers are summed exactly.

Target: the ggml build lanner links (libggml-python 0.20.2.post1, ggml 8c63e70), whose CPU
backend is compiled for AVX2+FMA+F16C (no AVX-512 code), with weights in the plain CPU buffer
(lanner's default; weights it places in ggml's repacking buffer types, e.g. Q4_K as q4_K_8x8,
run other kernels, not reproduced here). Learned from ggml's sources
(src/ggml-cpu/arch/x86/quants.c, ggml-quants.c, vec.h, vec.cpp, ops.cpp) and checked op by op
against that very library (tests/reference/ggml_ops.py, tests/test_core_reference_ggml.py).

What is reproduced:
- mul_mat with a quantized weight (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K): src1 rows are
  quantized to the vec_dot_type (Q8_0: per 32, amax/127 stored as f16, q = rint(x * 127/amax);
  Q8_1: same plus s = f16(d * sum q) with the unrounded d; Q8_K: per 256, the first
  largest-magnitude element max, iscale = -127/max, q = min(127, rint(iscale x)), d = 1/iscale
  float32), then the AVX2 dot product: integer sums in 8 lanes (lane l of every 32 elements holds
  elements 4l..4l+3, times the sub-block scale for K-quants), per (super)block
  acc_l = fma(d_w * d_a, lane_l, acc_l) in float32, then hsum ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)),
  plus the offset terms (Q4_1/Q5_1: + sum of f16(m) * f16(s) in float32; Q4_K: a 4-lane
  fma(-d_a * dmin, mins . bsums) accumulator; Q6_K: its -32 goes through the Q8_K block sums).
  (Checked equal to this build's mul_mat, whichever kernel it dispatches to.)
  F32 / F16 / BF16 weights: ggml_vec_dot_f32 (fma into 4 x 8 lanes) / _f16 / _bf16 (src1
  rounded to f16 / bf16, exact products in 4 x 8 lanes, each with its own final reduction).
  Other weight types raise NotImplementedError.
- RMSNorm: float32 squares summed in double, scale = 1/sqrtf(mean + eps), (x * scale) * w.
- RoPE: theta_i = pos * theta_scale^i by repeated float32 multiplication, libm cosf/sinf,
  x0*cos - x1*sin evaluated as fma(x0, cos, -(x1*sin)) (and fma(x0, sin, x1*cos)).
- SwiGLU: x / (1 + v_expf(-x)) * g, v_expf being ggml's AVX2 polynomial exp.
- GeGLU: the f16 table ggml_table_gelu_f16 (gelu_tanh evaluated in float32 with libm tanhf and
  a fused 1 + a*x*x) read at f16(x); 0 for x <= -10, x for x >= 10.
- K, V stored in the f16 cache (round to nearest even); Q rounded to f16; f16 dot products in
  4 x 8 float32 lanes (ggml_vec_dot_f16).
- Flash attention (one-chunk path: fewer than 64 query rows): per visible key in cell order,
  online softmax with libm expf; the V accumulator is f16: on a new max it is scaled (f16 round)
  by exp(M_old - M), then acc = f16(fma(v, exp(s - M), acc)); S = S*ms + vs unfused; the result
  acc * (1/S) in float32.
- softmax(KQ)V path: f16 scores as above, soft_max_ext (scale, f16 mask, v_expf in chunks of 8
  summed in double, times float(1/sum)), probabilities rounded to f16 by the f16-V mul_mat and
  summed with the f16 dot (lanes by KV cell index, so the cell layout matters).
libm functions are called through ctypes from the C library the core itself uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

import numpy as np
from gguf import GGMLQuantizationType

F32, F64 = np.float32, np.float64
_Q = GGMLQuantizationType

# ggml CPU type traits: the type each weight type's dot product takes its activations (src1) in.
VEC_DOT_TYPE = {
    _Q.F32: _Q.F32, _Q.F16: _Q.F16, _Q.BF16: _Q.BF16,
    _Q.Q4_0: _Q.Q8_0, _Q.Q5_0: _Q.Q8_0, _Q.Q8_0: _Q.Q8_0,
    _Q.Q4_1: _Q.Q8_1, _Q.Q5_1: _Q.Q8_1,
    _Q.Q4_K: _Q.Q8_K, _Q.Q6_K: _Q.Q8_K,
}
SUPPORTED_WEIGHT_TYPES = tuple(VEC_DOT_TYPE)
_FLOAT_TYPES = (_Q.F32, _Q.F16, _Q.BF16)


# ---------------------------------------------------------------------------------------------
# scalar helpers


@lru_cache(maxsize=None)
def _libm(name: str):
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def libm32(name: str, x: np.ndarray) -> np.ndarray:
    """The C library's float function `name` (expf, cosf, ...) applied elementwise."""
    x = np.asarray(x, F32)
    fn = _libm(name)
    return np.fromiter((fn(v) for v in x.ravel().tolist()), F32, count=x.size).reshape(x.shape)


def fma32(a, b, c) -> np.ndarray:
    """float32 fused multiply-add: a*b is exact in float64, so one float64 add then the float32
    rounding (a double rounding could differ only on exact float32 midpoints)."""
    return (np.asarray(a, F32).astype(F64) * np.asarray(b, F32) + np.asarray(c, F32)).astype(F32)


def f16_round(x) -> np.ndarray:
    """float32 -> nearest f16 (ties to even, as F16C's vcvtps2ph with imm 0) -> float32."""
    return np.asarray(x, F32).astype(np.float16).astype(F32)


def hsum8(v: np.ndarray) -> np.ndarray:
    """hsum_float_8 of (..., 8) float32 lanes: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))."""
    t = v[..., :4] + v[..., 4:]
    return (t[..., 0] + t[..., 2]) + (t[..., 1] + t[..., 3])


def dot_f16(p: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f16 (AVX2) over the last axis, given the products p (exact in float32, as
    products of two f16 are): 4 accumulators of 8 lanes over steps of 32, reduced as
    (a0+a2)+(a1+a3) then ((t0+t1)+(t2+t3)) with t_k = l_k + l_{k+4}; leftovers in double."""
    n = p.shape[-1]
    n32 = n - n % 32
    res = np.zeros(p.shape[:-1], F32)
    if n32:
        steps = p[..., :n32].reshape(*p.shape[:-1], n32 // 32, 4, 8)
        acc = steps[..., 0, :, :].copy()
        for i in range(1, n32 // 32):
            acc = acc + steps[..., i, :, :]
        x0 = (acc[..., 0, :] + acc[..., 2, :]) + (acc[..., 1, :] + acc[..., 3, :])
        t = x0[..., :4] + x0[..., 4:]
        res = (t[..., 0] + t[..., 1]) + (t[..., 2] + t[..., 3])
    if n32 < n:
        res = (res.astype(F64) + p[..., n32:].astype(F64).sum(-1)).astype(F32)
    return res


def bf16_round(x) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even) -> float32, as GGML_FP32_TO_BF16."""
    u = np.asarray(x, F32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(F32)


def dot_bf16(p: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_bf16 (AVX2) of exact float32 products p: 4 accumulators of 8 lanes over steps
    of 32, (c0+c2)+(c1+c3) then hsum8; leftovers in double."""
    n = p.shape[-1]
    n32 = n - n % 32
    res = np.zeros(p.shape[:-1], F32)
    if n32:
        steps = p[..., :n32].reshape(*p.shape[:-1], n32 // 32, 4, 8)
        acc = steps[..., 0, :, :].copy()
        for i in range(1, n32 // 32):
            acc = steps[..., i, :, :] + acc
        res = hsum8((acc[..., 0, :] + acc[..., 2, :]) + (acc[..., 1, :] + acc[..., 3, :]))
    if n32 < n:
        res = (res.astype(F64) + p[..., n32:].astype(F64).sum(-1)).astype(F32)
    return res


def dot_f32(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f32 (AVX2+FMA) of x (n, K) with every row of w (o, K) -> (n, o): 4
    accumulators of 8 lanes, acc = fma(x, w, acc) over steps of 32, reduced as dot_f16;
    leftovers added one by one in float32 (product rounded, then the sum)."""
    n, k = x.shape
    k32 = k - k % 32
    acc = np.zeros((n, w.shape[0], 4, 8), F32)
    for i in range(0, k32, 32):
        xs = x[:, None, i:i + 32].astype(F64).reshape(n, 1, 4, 8)
        acc = (xs * w[None, :, i:i + 32].reshape(1, -1, 4, 8) + acc).astype(F32)
    x0 = (acc[..., 0, :] + acc[..., 2, :]) + (acc[..., 1, :] + acc[..., 3, :])
    t = x0[..., :4] + x0[..., 4:]
    res = (t[..., 0] + t[..., 1]) + (t[..., 2] + t[..., 3])
    for i in range(k32, k):  # float sumf += x*y, unfused
        res = res + x[:, None, i] * w[None, :, i]
    return res


def v_expf(x: np.ndarray) -> np.ndarray:
    """ggml_v_expf (AVX2+FMA): ggml's vectorized exp, a degree-5 polynomial with its own range
    reduction (max error ~1.5 ulp), so not libm's expf."""
    x = np.asarray(x, F32)
    c = {k: F32(float.fromhex(v)) for k, v in dict(
        r="0x1.8p23", l2e="0x1.715476p+0", ln2hi="0x1.62e4p-1", ln2lo="0x1.7f7d1cp-20",
        p0="0x1.0e4020p-7", p1="0x1.573e2ep-5", p2="0x1.555e66p-3", p3="0x1.fffdb6p-2",
        p4="0x1.ffffecp-1").items()}
    with np.errstate(invalid="ignore", over="ignore"):
        z = fma32(x, c["l2e"], c["r"])
        n = z - c["r"]
        b = fma32(-n, c["ln2lo"], fma32(-n, c["ln2hi"], x))
        e = z.view(np.uint32) << np.uint32(23)
        k = (e + F32(1).view(np.uint32)).view(F32)
        u = b * b
        j = fma32(fma32(fma32(c["p0"], b, c["p1"]), u, fma32(c["p2"], b, c["p3"])), u, c["p4"] * b)
        res = fma32(j, k, k)
        big = np.abs(n) > 126
        if big.any():
            g = np.where(n <= 0, np.uint32(0x82000000), np.uint32(0))
            s1 = (g + np.uint32(0x7F000000)).view(F32)
            s2 = (e - g).view(F32)
            res = np.where(np.abs(n) > 192, s1 * s1, np.where(big, fma32(s2, j, s2) * s1, res))
    return res


# ---------------------------------------------------------------------------------------------
# matmul


def _f16_field(blocks: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[..., at:at + 2]).view(np.float16)[..., 0].astype(F32)


def _bits32(blocks: np.ndarray, at: int) -> np.ndarray:
    qh = np.ascontiguousarray(blocks[..., at:at + 4]).view(np.uint32)[..., 0].astype(np.int64)
    return ((qh[..., None] >> np.arange(32)) & 1).astype(np.int16)


def decode_weight(raw: np.ndarray, qtype: GGMLQuantizationType) -> dict:
    """Raw GGUF rows (n_rows, row_bytes) -> what ggml's AVX2 dot product multiplies: for F32, F16
    and BF16 the values wf (n_rows, n_in) float32; for the quant types wi (n_rows, n_in) int16 (quant times sub-block scale for K-quants, unsigned where the kernel
    keeps it unsigned), d (n_rows, n_blocks) float32 block scale, bs (block size), and per type
    m (Q4_1/Q5_1 block offset), dmin/mins (Q4_K), sc (Q6_K sub-block scales)."""
    raw = np.asarray(raw)
    rows = raw.shape[0]
    if qtype in _FLOAT_TYPES:  # wf: the weight values, float32
        if qtype == _Q.F32:
            wf = np.ascontiguousarray(raw).view(F32)
        elif qtype == _Q.F16:
            wf = np.ascontiguousarray(raw).view(np.float16).astype(F32)
        else:
            wf = (np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16).view(F32)
        return dict(wf=wf.reshape(rows, -1))
    if qtype in (_Q.Q4_0, _Q.Q4_1, _Q.Q5_0, _Q.Q5_1):
        size = {_Q.Q4_0: 18, _Q.Q4_1: 20, _Q.Q5_0: 22, _Q.Q5_1: 24}[qtype]
        b = raw.reshape(rows, -1, size)
        qs = b[..., size - 16:].astype(np.int16)
        q = np.concatenate([qs & 15, qs >> 4], axis=-1)  # element j < 16 low nibble, else high
        if qtype in (_Q.Q5_0, _Q.Q5_1):
            q = q | (_bits32(b, 2 if qtype == _Q.Q5_0 else 4) << 4)
        if qtype == _Q.Q4_0:
            q = q - 8
        if qtype == _Q.Q5_0:
            q = q - 16
        out = dict(wi=q.reshape(rows, -1), d=_f16_field(b, 0), bs=32)
        if qtype in (_Q.Q4_1, _Q.Q5_1):
            out["m"] = _f16_field(b, 2)
        return out
    if qtype == _Q.Q8_0:
        b = raw.reshape(rows, -1, 34)
        wi = np.ascontiguousarray(b[..., 2:]).view(np.int8).astype(np.int16).reshape(rows, -1)
        return dict(wi=wi, d=_f16_field(b, 0), bs=32)
    if qtype == _Q.Q4_K:
        b = raw.reshape(rows, -1, 144)
        s = b[..., 4:16].astype(np.int16)
        sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 15) | ((s[..., 0:4] >> 6) << 4)], -1)
        mins = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], -1)
        qs = b[..., 16:].astype(np.int16).reshape(rows, -1, 4, 32)
        q = np.stack([qs & 15, qs >> 4], axis=-2).reshape(rows, -1, 8, 32)  # sub-blocks 2j, 2j+1
        wi = (q * sc[..., None]).reshape(rows, -1)
        return dict(wi=wi, d=_f16_field(b, 0), dmin=_f16_field(b, 2), mins=mins, bs=256)
    if qtype == _Q.Q6_K:
        b = raw.reshape(rows, -1, 210)
        ql, qh = b[..., 0:128].astype(np.int16), b[..., 128:192].astype(np.int16)
        sc = np.ascontiguousarray(b[..., 192:208]).view(np.int8).astype(np.int16)
        q = np.empty(ql.shape[:-1] + (256,), np.int16)
        for h in range(2):
            lo, hi, e = ql[..., 64 * h:64 * h + 64], qh[..., 32 * h:32 * h + 32], 128 * h
            q[..., e:e + 32] = (lo[..., :32] & 15) | ((hi & 3) << 4)
            q[..., e + 32:e + 64] = (lo[..., 32:] & 15) | (((hi >> 2) & 3) << 4)
            q[..., e + 64:e + 96] = (lo[..., :32] >> 4) | (((hi >> 4) & 3) << 4)
            q[..., e + 96:e + 128] = (lo[..., 32:] >> 4) | (((hi >> 6) & 3) << 4)
        wi = (q * np.repeat(sc, 16, axis=-1)).reshape(rows, -1)  # q unsigned; -32 via bsums
        return dict(wi=wi, d=_f16_field(b, 208), sc=sc, bs=256)
    raise NotImplementedError(f"ggml emulation: weight type {qtype.name} is not covered "
                              f"({[t.name for t in SUPPORTED_WEIGHT_TYPES]})")


def quantize_src1(x: np.ndarray, vec_dot_type: GGMLQuantizationType) -> dict:
    """Activation rows x (n, K) as ggml's from_float stores them: q (n, K) float64 integers,
    d (n, n_blocks) float32 (the f16-rounded d for Q8_0/Q8_1), and s (Q8_1: f16(d_unrounded *
    sum q) per block) or bsums (Q8_K: sums of 16) ."""
    x = np.asarray(x, F32)
    n = x.shape[0]
    if vec_dot_type in _FLOAT_TYPES:  # F32 as is, F16 / BF16 rounded
        return dict(x={_Q.F32: lambda v: v, _Q.F16: f16_round, _Q.BF16: bf16_round}[vec_dot_type](x))
    if vec_dot_type in (_Q.Q8_0, _Q.Q8_1):
        xb = x.reshape(n, -1, 32)
        amax = np.abs(xb).max(axis=-1, keepdims=True)
        d = amax / F32(127)
        with np.errstate(divide="ignore"):
            inv = np.where(amax != 0, F32(127) / amax, F32(0)).astype(F32)
        q = np.rint(xb * inv)  # _mm256_round_ps(_MM_ROUND_NEAREST): ties to even
        out = dict(q=q.reshape(n, -1).astype(F64), d=f16_round(d)[..., 0])
        if vec_dot_type == _Q.Q8_1:
            out["s"] = f16_round(d[..., 0] * q.sum(axis=-1))
        return out
    if vec_dot_type == _Q.Q8_K:  # quantize_row_q8_K_ref (the x86 build has no SIMD version)
        xb = x.reshape(n, -1, 256)
        mx = np.take_along_axis(xb, np.abs(xb).argmax(axis=-1)[..., None], axis=-1)
        nz = mx != 0
        iscale = np.where(nz, F32(-127) / np.where(nz, mx, F32(1)), F32(0)).astype(F32)
        q = np.minimum(np.rint(xb * iscale), F32(127))  # nearest_int: ties to even
        d = np.where(nz, F32(1) / np.where(nz, iscale, F32(1)), F32(0)).astype(F32)[..., 0]
        return dict(q=q.reshape(n, -1).astype(F64), d=d,
                    bsums=q.reshape(n, -1, 16, 16).sum(axis=-1).astype(F64))
    raise NotImplementedError(vec_dot_type.name)


def matmul_exact(x: np.ndarray, w: dict, qtype: GGMLQuantizationType) -> np.ndarray:
    """x (n, K) @ W.T (n, n_out) as ggml's AVX2 vec_dot for W's type computes every element,
    W given as decode_weight's dict."""
    a = quantize_src1(x, VEC_DOT_TYPE[qtype])
    if qtype in _FLOAT_TYPES:  # ggml_vec_dot_f32 / _f16 / _bf16, by chunks of 256 output rows
        xs, wf = a["x"], w["wf"]
        out = np.empty((xs.shape[0], wf.shape[0]), F32)
        for o0 in range(0, wf.shape[0], 256):
            wc = wf[o0:o0 + 256]
            if qtype == _Q.F32:
                out[:, o0:o0 + 256] = dot_f32(xs, wc)
            else:  # products of two f16 / bf16 values are exact in float32
                dot = dot_f16 if qtype == _Q.F16 else dot_bf16
                out[:, o0:o0 + 256] = dot(xs[:, None, :] * wc[None, :, :])
        return out
    qa, da = a["q"], a["d"]
    n, k = qa.shape
    o, bs = w["wi"].shape[0], w["bs"]
    nb, per = k // bs, bs // 8  # blocks; elements per lane per block
    # lane l of a block sums the elements e with (e % 32) // 4 == l. Integers, summed exactly:
    # float32 holds every partial sum (|sum| < 2^24) except Q6_K's, summed in two halves.
    qa_g = np.ascontiguousarray(qa.reshape(n, nb, bs // 32, 8, 4).transpose(1, 3, 0, 2, 4),
                                dtype=F32).reshape(nb * 8, n, per)
    wi_g = np.ascontiguousarray(w["wi"].reshape(o, nb, bs // 32, 8, 4).transpose(1, 3, 2, 4, 0),
                                dtype=F32).reshape(nb * 8, per, o)
    if qtype == _Q.Q6_K:
        h = per // 2
        lanes = (np.matmul(qa_g[..., :h], wi_g[:, :h]).astype(F64)
                 + np.matmul(qa_g[..., h:], wi_g[:, h:]))
    else:
        lanes = np.matmul(qa_g, wi_g)
    lanes = lanes.reshape(nb, 8, n, o)
    if qtype == _Q.Q6_K:  # lane l -= 32 * (bsum[2l] sc[2l] + bsum[2l+1] sc[2l+1])
        corr = np.einsum("nblt,oblt->blno", a["bsums"].reshape(n, nb, 8, 2),
                         w["sc"].reshape(o, nb, 8, 2).astype(F64))
        lanes = lanes - 32 * corr
    acc = np.zeros((n, o, 8), F32)
    for b in range(nb):
        d = (da[:, b, None] * w["d"][None, :, b]).astype(F32)  # (n, o) float32 product
        acc = (d[..., None].astype(F64) * lanes[b].transpose(1, 2, 0) + acc).astype(F32)
    out = hsum8(acc)
    if qtype in (_Q.Q4_1, _Q.Q5_1):  # + sum over blocks of f16(m) * f16(s), in float32
        summs = np.zeros((n, o), F32)
        for b in range(nb):
            summs = summs + w["m"][None, :, b] * a["s"][:, b, None]
        out = out + summs
    elif qtype == _Q.Q4_K:  # 4-lane accumulator of fma(-d_a * dmin, mins . 32-sums)
        s32 = a["bsums"].reshape(n, nb, 8, 2).sum(axis=-1)  # (n, nb, 8)
        mins = w["mins"].astype(F64)  # (o, nb, 8)
        acc_m = np.zeros((n, o, 4), F32)
        for b in range(nb):
            prod = (mins[None, :, b, 0::2] * s32[:, None, b, 0::2]
                    + mins[None, :, b, 1::2] * s32[:, None, b, 1::2])  # (n, o, 4)
            dmin = (-da[:, b, None] * w["dmin"][None, :, b]).astype(F32)
            acc_m = (dmin[..., None].astype(F64) * prod + acc_m).astype(F32)
        out = out + ((acc_m[..., 0] + acc_m[..., 2]) + (acc_m[..., 1] + acc_m[..., 3]))
    return out


def matmul_fast(x: np.ndarray, w_float: np.ndarray, raw: np.ndarray,
                qtype: GGMLQuantizationType) -> np.ndarray:
    """The same activation rounding with a float32 BLAS matmul of the dequantized weight: equal
    to matmul_exact up to summation order (~1e-6 relative). For the vocabulary projection, whose
    exact lanes would cost seconds and whose result feeds nothing else."""
    vt = VEC_DOT_TYPE.get(qtype)
    if vt is None:
        raise NotImplementedError(f"ggml emulation: weight type {qtype.name} is not covered")
    a = quantize_src1(x, vt)
    if qtype in _FLOAT_TYPES:
        return a["x"] @ w_float.T
    bs = 256 if vt == _Q.Q8_K else 32
    xq = (a["q"].reshape(x.shape[0], -1, bs) * a["d"][..., None]).reshape(x.shape).astype(F32)
    y = xq @ w_float.T
    if vt == _Q.Q8_1:  # the offset term uses s, not f16(d) * sum(q)
        size = 20 if qtype == _Q.Q4_1 else 24
        m = _f16_field(np.asarray(raw).reshape(raw.shape[0], -1, size), 2).astype(F64)
        qsum = a["q"].reshape(x.shape[0], -1, 32).sum(axis=-1)
        y = (y + (a["s"] - a["d"].astype(F64) * qsum) @ m.T).astype(F32)
    return y


# ---------------------------------------------------------------------------------------------
# elementwise ops


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """ggml_rms_norm then ggml_mul: float32 squares summed in double, mean rounded to float32,
    scale = 1/sqrtf(mean + eps), (x * scale) * w."""
    x = np.asarray(x, F32)
    mean = (np.square(x).astype(F64).sum(axis=-1, keepdims=True) / x.shape[-1]).astype(F32)
    return (x * (F32(1) / np.sqrt(mean + F32(eps)))) * w


@lru_cache(maxsize=64)
def _rope_cos_sin(n_tokens: int, n_rot: int, base: float, freq_scale: float):
    """ggml_rope_cache_init for positions 0..n_tokens-1: (cos, sin) (n_tokens, n_rot/2)."""
    theta_scale = F32(np.power(F64(F32(base)), F64(F32(-2.0) / F32(n_rot))))  # powf
    theta = np.arange(n_tokens).astype(F32)
    cols = []
    for _ in range(n_rot // 2):
        cols.append(theta)
        theta = theta * theta_scale
    ang = np.stack(cols, axis=-1) * F32(freq_scale)
    return libm32("cosf", ang), libm32("sinf", ang)


def apply_rope(x: np.ndarray, n_tokens: int, n_rot: int, base: float, freq_scale: float,
               neox: bool) -> np.ndarray:
    """RoPE of x (n_tokens, n_heads, head_dim) at positions 0..n_tokens-1, as ggml_rope_ext."""
    cos, sin = _rope_cos_sin(n_tokens, n_rot, float(base), float(freq_scale))
    cos, sin = cos[:, None, :], sin[:, None, :]
    half = n_rot // 2
    lo, hi = (slice(0, half), slice(half, n_rot)) if neox else (slice(0, n_rot, 2),
                                                                 slice(1, n_rot, 2))
    x0, x1 = x[..., lo], x[..., hi]
    out = x.copy()
    out[..., lo] = fma32(x0, cos, -(x1 * sin))
    out[..., hi] = fma32(x0, sin, x1 * cos)
    return out


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """ggml_vec_swiglu_f32 (AVX2): gate / (1 + v_expf(-gate)) * up."""
    with np.errstate(over="ignore"):
        return (gate / (F32(1) + v_expf(F32(0) - gate))) * up


@lru_cache(maxsize=1)
def gelu_f16_table() -> np.ndarray:
    """ggml_table_gelu_f16 as float32, indexed by f16 bit pattern."""
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(F32)
    c, a, h, one = (F32(v) for v in (0.79788456080286535587989211986876, 0.044715, 0.5, 1.0))
    with np.errstate(all="ignore"):
        inner = ((c * x).astype(F64) * fma32(a * x, x, one)).astype(F32)
        t = np.zeros_like(inner)
        ok = np.isfinite(inner)
        t[ok] = libm32("tanhf", inner[ok])
        return f16_round((h * x) * (one + t))


def geglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """ggml_vec_geglu_f32 with GGML_GELU_FP16."""
    g = gelu_f16_table()[gate.astype(np.float16).view(np.uint16)]
    return np.where(gate <= -10, F32(0), np.where(gate >= 10, gate, g)) * up


# ---------------------------------------------------------------------------------------------
# attention


def _heads_f16(q, k, v):
    """Q rounded to f16 (n_head, T, hd); K, V as stored in the f16 cache, per query head."""
    group = q.shape[1] // k.shape[1]
    qh = f16_round(q).transpose(1, 0, 2)
    kh = np.repeat(f16_round(k).transpose(1, 0, 2), group, axis=0)
    vh = np.repeat(f16_round(v).transpose(1, 0, 2), group, axis=0)
    return qh, kh, vh


def attend_flash(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: np.ndarray,
                 softcap: float) -> np.ndarray:
    """ggml_flash_attn_ext's one-chunk CPU path over an f16 KV cache whose cells hold positions
    0..T-1 in order. q (T, n_head, hd_k), k/v (T, n_head_kv, hd), mask (T, T) visible ->
    (T, n_head * hd_v)."""
    n_tokens, n_head, _ = q.shape
    if n_tokens >= 64:
        raise NotImplementedError("ggml uses its tiled flash attention for 64+ query rows")
    qh, kh, vh = _heads_f16(q, k, v)
    s = dot_f16(qh[:, :, None, :] * kh[:, None, :, :])  # (n_head, T, T) f16 dot products
    if softcap > 0:
        s = F32(softcap) * libm32("tanhf", s * (F32(scale) / F32(softcap)))
    else:
        s = s * F32(scale)
    m = np.full((n_head, n_tokens), -np.inf, F32)
    ssum = np.zeros((n_head, n_tokens), F32)
    acc = np.zeros((n_head, n_tokens, vh.shape[2]), F32)  # holds f16 values
    with np.errstate(invalid="ignore"):
        for j in range(n_tokens):
            ok = np.broadcast_to(mask[:, j][None, :], m.shape)
            sj = s[:, :, j]
            new_max = ok & (sj > m)
            rest = ok & ~new_max
            ms = np.ones_like(m)
            vs = np.ones_like(m)
            ms[new_max] = libm32("expf", m[new_max] - sj[new_max])
            vs[rest] = libm32("expf", sj[rest] - m[rest])
            scaled = np.where(new_max[..., None], f16_round(acc * ms[..., None]), acc)
            step = f16_round(fma32(vh[:, j, None, :], vs[..., None], scaled))
            acc = np.where(ok[..., None], step, acc)
            ssum = np.where(ok, ssum * ms + vs, ssum)
            m = np.where(new_max, sj, m)
    o = acc * (F32(1) / ssum)[..., None]
    return o.transpose(1, 0, 2).reshape(n_tokens, -1)


def attend_softmax(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: np.ndarray,
                   cells: np.ndarray) -> np.ndarray:
    """The softmax(KQ)V graph (mul_mat, soft_max_ext, mul_mat with a transposed f16 V) with key j
    in KV cell cells[j] (n_kv padded to 32 cells, as the core does); the lanes of the P.V dot
    product follow the cell index."""
    n_tokens, n_head, _ = q.shape
    # the core pads n_kv to a multiple of 32 cells; zero cells add nothing, but fewer than 32
    # would move ggml's dot products from the SIMD lanes to the scalar tail
    n_kv = int(cells.max()) + 1
    n_kv += -n_kv % 32
    qh, kh, vh = _heads_f16(q, k, v)
    kc = np.zeros((n_head, n_kv, kh.shape[2]), F32)
    vc = np.zeros((n_head, n_kv, vh.shape[2]), F32)
    kc[:, cells], vc[:, cells] = kh, vh
    vis = np.zeros((n_tokens, n_kv), bool)
    vis[:, cells] = mask
    s = dot_f16(qh[:, :, None, :] * kc[:, None, :, :])  # (n_head, T, n_kv)
    w = s * F32(scale) + np.where(vis, F32(0), F32(-np.inf))[None]
    e = v_expf(w - w.max(axis=-1, keepdims=True))
    chunks = hsum8(e.reshape(*e.shape[:-1], -1, 8)).astype(F64)
    total = np.zeros(chunks.shape[:-1], F64)
    for i in range(chunks.shape[-1]):
        total = total + chunks[..., i]
    p = f16_round(e * (1.0 / total).astype(F32)[..., None])
    o = dot_f16(p[:, :, None, :] * vc.transpose(0, 2, 1)[:, None, :, :])  # (n_head, T, hd_v)
    return o.transpose(1, 0, 2).reshape(n_tokens, -1)
