// mul_mat_q's scalar build: the lane arithmetic of ggml's AVX2 dot products written out, one
// output element at a time (any CPU; the reference the SIMD builds must equal bit for bit).
// Internal to mul_mat_q.cpp (its only includer), which is built with -ffp-contract=off: every
// fused multiply-add is written out, as in the kernel whose rounding it keeps.
#pragma once
#include <cmath>
#include <cstring>
#include <type_traits>

#include "mul_mat_q_blocks.h"

namespace lanner::mmq {

// Weight element values of one block, as the AVX2 build's bytes hold them.
inline void unpack_scalar(const BlockQ8_0& b, int8_t* q) { std::memcpy(q, b.qs, 32); }
inline void unpack_scalar(const BlockQ4_0& b, int8_t* q) {
    for (int e = 0; e < 16; ++e) q[e] = (int8_t)((b.qs[e] & 15) - 8), q[e + 16] = (int8_t)((b.qs[e] >> 4) - 8);
}
inline void unpack_scalar(const BlockQ4_1& b, int8_t* q) {  // 0..15, unsigned in the AVX2 build
    for (int e = 0; e < 16; ++e) q[e] = (int8_t)(b.qs[e] & 15), q[e + 16] = (int8_t)(b.qs[e] >> 4);
}
inline void unpack_scalar(const BlockQ5_0& b, int8_t* q) {
    uint32_t h;
    std::memcpy(&h, b.qh, 4);
    for (int e = 0; e < 16; ++e) {
        q[e] = (int8_t)(((b.qs[e] & 15) | (((h >> e) & 1) << 4)) - 16);
        q[e + 16] = (int8_t)(((b.qs[e] >> 4) | (((h >> (e + 16)) & 1) << 4)) - 16);
    }
}

inline float hsum8_scalar(const float* a) {  // ggml's hsum_float_8: (h0+h2)+(h1+h3), h_i = a_i+a_{i+4}
    float h[4];
    for (int i = 0; i < 4; ++i) h[i] = a[i + 4] + a[i];
    return (h[0] + h[2]) + (h[1] + h[3]);
}

template <class W, class A>
void rows_scalar(const Job& j, int r, int c) {
    float acc[8] = {};
    float summs = 0.0f;
    const W* wb = (const W*)(j.w + r * j.w_stride);
    const A* ab = (const A*)(j.a + c * j.a_stride);
    int8_t q[32];
    for (int ib = 0; ib < j.nb; ++ib) {
        unpack_scalar(wb[ib], q);
        const float d = h2f(wb[ib].d) * j.ad[(size_t)c * j.nb + ib];
        for (int l = 0; l < 8; ++l) {
            int32_t s = 0;
            for (int e = 4 * l; e < 4 * l + 4; ++e) s += (int32_t)q[e] * ab[ib].qs[e];
            acc[l] = std::fma(d, (float)s, acc[l]);
        }
        if constexpr (std::is_same<W, BlockQ4_1>::value)
            summs = std::fma(h2f(wb[ib].m), j.as[(size_t)c * j.nb + ib], summs);
    }
    j.y[c * j.y_stride + r] = hsum8_scalar(acc) + summs;
}

// Q4_K x Q8_K (ggml's AVX2 order): per super-block, 8 int32 lanes l = sum over the 8 sub-blocks
// of scale * (4 products at 4l..4l+3 of its 32), fused into 8 float lanes by d = dy*dx; the
// mins' term sum(min_k * q8 sums) in 4 int32 lanes fused by -dy*dmin into 4 float lanes.
inline void rows_q4k_scalar(const Job& j, int r, int c) {
    float acc[8] = {}, acc_m[4] = {};
    const auto* wb = (const BlockQ4K*)(j.w + r * j.w_stride);
    const auto* ab = (const BlockQ8K*)(j.a + c * j.a_stride);
    for (int ib = 0; ib < j.nb; ++ib) {
        uint8_t sc[8], mn[8];
        q4k_scales(wb[ib].scales, sc, mn);
        int32_t lanes[8] = {};
        for (int s = 0; s < 8; ++s) {  // sub-block s: elements 32s.., nibbles of qs[32*(s/2)..]
            const uint8_t* q = wb[ib].qs + 32 * (s / 2);
            const int8_t* y = ab[ib].qs + 32 * s;
            for (int l = 0; l < 8; ++l) {
                int32_t t = 0;
                for (int e = 4 * l; e < 4 * l + 4; ++e) t += (int32_t)((s & 1) ? q[e] >> 4 : q[e] & 15) * y[e];
                lanes[l] += sc[s] * t;
            }
        }
        int32_t pm[4];
        for (int k = 0; k < 4; ++k) {
            const int32_t s0 = ab[ib].bsums[4 * k] + ab[ib].bsums[4 * k + 1];
            const int32_t s1 = ab[ib].bsums[4 * k + 2] + ab[ib].bsums[4 * k + 3];
            pm[k] = mn[2 * k] * s0 + mn[2 * k + 1] * s1;
        }
        const float dy = ab[ib].d;
        const float d = dy * h2f(wb[ib].d), dmin = -dy * h2f(wb[ib].dmin);
        for (int l = 0; l < 8; ++l) acc[l] = std::fma(d, (float)lanes[l], acc[l]);
        for (int k = 0; k < 4; ++k) acc_m[k] = std::fma(dmin, (float)pm[k], acc_m[k]);
    }
    j.y[c * j.y_stride + r] = hsum8_scalar(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}

// Q6_K x Q8_K (ggml's AVX2 order): 8 int32 lanes l = sum over the 8 chunks of 32 of
// scale(sub-block) * (4 products at 4l..4l+3, values 0..63), minus 32 * (bsums . scales) of
// sub-blocks 2l, 2l+1; fused into 8 float lanes by d = dy*dx.
inline void rows_q6k_scalar(const Job& j, int r, int c) {
    float acc[8] = {};
    const auto* wb = (const BlockQ6K*)(j.w + r * j.w_stride);
    const auto* ab = (const BlockQ8K*)(j.a + c * j.a_stride);
    for (int ib = 0; ib < j.nb; ++ib) {
        const BlockQ6K& b = wb[ib];
        int32_t lanes[8] = {};
        for (int h = 0; h < 2; ++h)
            for (int t = 0; t < 4; ++t) {
                const uint8_t* ql = b.ql + 64 * h + 32 * (t & 1);
                const uint8_t* qh = b.qh + 32 * h;
                const int8_t* y = ab[ib].qs + 128 * h + 32 * t;
                for (int l = 0; l < 8; ++l) {
                    int32_t s = 0;
                    for (int e = 4 * l; e < 4 * l + 4; ++e) {
                        const int lo = t < 2 ? ql[e] & 15 : ql[e] >> 4, hi = (qh[e] >> (2 * t)) & 3;
                        s += (lo | (hi << 4)) * y[e];
                    }
                    lanes[l] += b.scales[8 * h + 2 * t + (l >= 4)] * s;
                }
            }
        for (int l = 0; l < 8; ++l)
            lanes[l] -= 32 * (ab[ib].bsums[2 * l] * b.scales[2 * l] + ab[ib].bsums[2 * l + 1] * b.scales[2 * l + 1]);
        const float d = ab[ib].d * h2f(b.d);
        for (int l = 0; l < 8; ++l) acc[l] = std::fma(d, (float)lanes[l], acc[l]);
    }
    j.y[c * j.y_stride + r] = hsum8_scalar(acc);
}

}  // namespace lanner::mmq
