// mul_mat_q: quantized weight x F32 columns in register tiles (see mul_mat_q.h). Built with
// -ffp-contract=off: every fused multiply-add below is written out, as in the kernel whose
// rounding it keeps.
#include "mul_mat_q.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LANNER_X86 1
#endif

namespace lanner {

namespace {


// ggml's block layouts (ggml-common.h), fp16 fields as raw bits
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ8_1 { uint16_t d, s; int8_t qs[32]; };  // s = d * sum(qs)
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };     // element e: e < 16 low nibble of qs[e], else high of qs[e-16]
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };  // x = d*q + m
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };  // q = nibble | bit e of qh << 4, minus 16
// K-quants: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins
struct BlockQ4K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };  // sub-block 2j: low nibbles of qs[32j..], 2j+1: high
struct BlockQ8K { float d; int8_t qs[256]; int16_t bsums[16]; };             // bsums: sums of 16 qs
// Q6_K: element 128h + 32t + e (h < 2, t < 4, e < 32): low 4 bits in ql[64h + 32(t&1) + e] (low
// nibble for t < 2, high for t >= 2), high 2 bits at bit 2t of qh[32h + e]; value - 32; 16
// sub-blocks of 16 with int8 scales.
struct BlockQ6K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36 && sizeof(BlockQ4_0) == 18 &&
              sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ4K) == 144 &&
              sizeof(BlockQ8K) == 292 && sizeof(BlockQ6K) == 210, "ggml block layouts");

// The 8 sub-block scales and mins of a Q4_K super-block (6 bits each, packed in 12 bytes).
void q4k_scales(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            sc[j] = q[j] & 63, mn[j] = q[j + 4] & 63;
        } else {
            sc[j] = (uint8_t)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
            mn[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
    }
}

inline float h2f(uint16_t h) { return ggml_fp16_to_fp32((ggml_fp16_t)h); }

// One multiply: W rows, X columns quantized to the weight type's dot type, Y columns.
struct Job {
    const char* w;        // row r at w + r * w_stride
    size_t w_stride;
    int nb;               // blocks per row (K / the weight type's block size)
    const char* a;        // quantized column c at a + c * a_stride
    size_t a_stride;
    const float* ad;      // [M][nb] column block scales (Q8_K: the super-block's d)
    const float* as;      // [M][nb] Q8_1 d*sum (Q4_1 only)
    float* y;             // Y[c][r] at y[c * y_stride + r]
    size_t y_stride;
    size_t prefetch = 0;  // a single column: fetch the weight bytes this far ahead into cache (0: none)
};

// ---- scalar build: the lane arithmetic written out -------------------------------------------

// Weight element values of one block, as the AVX2 build's bytes hold them.
void unpack_scalar(const BlockQ8_0& b, int8_t* q) { std::memcpy(q, b.qs, 32); }
void unpack_scalar(const BlockQ4_0& b, int8_t* q) {
    for (int e = 0; e < 16; ++e) q[e] = (int8_t)((b.qs[e] & 15) - 8), q[e + 16] = (int8_t)((b.qs[e] >> 4) - 8);
}
void unpack_scalar(const BlockQ4_1& b, int8_t* q) {  // 0..15, unsigned in the AVX2 build
    for (int e = 0; e < 16; ++e) q[e] = (int8_t)(b.qs[e] & 15), q[e + 16] = (int8_t)(b.qs[e] >> 4);
}
void unpack_scalar(const BlockQ5_0& b, int8_t* q) {
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
void rows_q4k_scalar(const Job& j, int r, int c) {
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
void rows_q6k_scalar(const Job& j, int r, int c) {
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

// ---- AVX2 build: R rows x C columns per pass ---------------------------------------------------
#ifdef LANNER_X86
#define LANNER_AVX2 __attribute__((target("avx2,fma,f16c")))

// A block's 32 weight values in bytes: `ax` the multiplicand of maddubs (unsigned), `sx` the
// sign source for the column bytes (signed types: |q| and q; Q4_1: q, unused).
struct Unpacked {
    __m256i ax, sx;
};

LANNER_AVX2 inline __m256i nibbles_avx2(const uint8_t* qs) {  // [lo nibbles of 16 B, hi nibbles]
    const __m128i t = _mm_loadu_si128((const __m128i*)qs);
    const __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(15));
}
LANNER_AVX2 inline Unpacked signed_avx2(__m256i q) { return {_mm256_sign_epi8(q, q), q}; }

LANNER_AVX2 inline Unpacked unpack_avx2(const BlockQ8_0& b) {
    return signed_avx2(_mm256_loadu_si256((const __m256i*)b.qs));
}
LANNER_AVX2 inline Unpacked unpack_avx2(const BlockQ4_0& b) {
    return signed_avx2(_mm256_sub_epi8(nibbles_avx2(b.qs), _mm256_set1_epi8(8)));
}
LANNER_AVX2 inline Unpacked unpack_avx2(const BlockQ4_1& b) {
    const __m256i q = nibbles_avx2(b.qs);
    return {q, q};
}
LANNER_AVX2 inline Unpacked unpack_avx2(const BlockQ5_0& b) {
    uint32_t h;
    std::memcpy(&h, b.qh, 4);
    // byte e = 0xFF where bit e of h is set: spread the 4 bytes of h over 8 bytes each, test one bit per byte
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                               _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                                 0x0101010101010101, 0x0000000000000000));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    // q - 16 where the bit is clear, q where set: or-in 0xF0 where clear (two's complement)
    const __m256i q = _mm256_or_si256(nibbles_avx2(b.qs), _mm256_andnot_si256(set, _mm256_set1_epi8((char)0xF0)));
    return signed_avx2(q);
}

LANNER_AVX2 inline float h2f_avx2(uint16_t h) { return _cvtsh_ss(h); }  // exact, as h2f

LANNER_AVX2 inline float hsum8_avx2(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

template <class W, class A, int R, int C>
LANNER_AVX2 void tile_avx2(const Job& j, int r0, int c0) {
    constexpr bool is_signed = !std::is_same<W, BlockQ4_1>::value;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R][C];
    float summs[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps(), summs[r][c] = 0.0f;
    const W* wb[R];
    const A* ab[C];
    const float* ad[C];
    const float* as[C];
    for (int r = 0; r < R; ++r) wb[r] = (const W*)(j.w + (r0 + r) * j.w_stride);
    for (int c = 0; c < C; ++c) {
        ab[c] = (const A*)(j.a + (c0 + c) * j.a_stride);
        ad[c] = j.ad + (size_t)(c0 + c) * j.nb;
        as[c] = is_signed ? nullptr : j.as + (size_t)(c0 + c) * j.nb;
    }
    for (int ib = 0; ib < j.nb; ++ib) {
        Unpacked u[R];
        float dw[R];
        if (j.prefetch)
            for (int r = 0; r < R; ++r) _mm_prefetch((const char*)&wb[r][ib] + j.prefetch, _MM_HINT_T0);
        for (int r = 0; r < R; ++r) u[r] = unpack_avx2(wb[r][ib]), dw[r] = h2f_avx2(wb[r][ib].d);
        for (int c = 0; c < C; ++c) {
            const __m256i qy = _mm256_loadu_si256((const __m256i*)ab[c][ib].qs);
            const float da = ad[c][ib];
            for (int r = 0; r < R; ++r) {
                const __m256i sy = is_signed ? _mm256_sign_epi8(qy, u[r].sx) : qy;
                const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, _mm256_maddubs_epi16(u[r].ax, sy)));
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * da), p, acc[r][c]);
            }
        }
        if constexpr (!is_signed)
            for (int r = 0; r < R; ++r) {
                const float m = h2f_avx2(wb[r][ib].m);
                for (int c = 0; c < C; ++c) summs[r][c] = std::fma(m, as[c][ib], summs[r][c]);
            }
    }
    for (int c = 0; c < C; ++c)
        for (int r = 0; r < R; ++r) j.y[(c0 + c) * j.y_stride + r0 + r] = hsum8_avx2(acc[r][c]) + summs[r][c];
}

template <class W, class A, int R>
LANNER_AVX2 void cols_avx2(const Job& j, int r0, int c0, int n) {  // n in 1..4 columns
    switch (n) {
        case 4: return tile_avx2<W, A, R, 4>(j, r0, c0);
        case 3: return tile_avx2<W, A, R, 3>(j, r0, c0);
        case 2: return tile_avx2<W, A, R, 2>(j, r0, c0);
        default: return tile_avx2<W, A, R, 1>(j, r0, c0);
    }
}

// AVX-512 (VNNI): the same arithmetic with two columns side by side in a 512-bit register. A
// column's lanes hold what the AVX2 tile's 256-bit register holds: vpdpbusd's sums of four
// u8 x s8 products equal maddubs + madd(1) exactly (no pair of products reaches int16's limit:
// |w| <= 128, |y| <= 127), y is negated where w < 0 as vpsignb does (where w = 0 the product is 0
// either way), and each column's float lanes take the same fused multiply-adds in block order.
#define LANNER_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")))
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*() and warn about it
// (GCC bug 105593) once they are inlined here: not about this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

template <class W, class A, int R, int P>  // R rows x P column pairs
LANNER_AVX512 void tile_avx512(const Job& j, int r0, int c0) {
    constexpr bool is_signed = !std::is_same<W, BlockQ4_1>::value;
    __m512 acc[R][P];
    float summs[R][2 * P];
    for (int r = 0; r < R; ++r) {
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
        for (int c = 0; c < 2 * P; ++c) summs[r][c] = 0.0f;
    }
    const W* wb[R];
    const A* ab[2 * P];
    const float* ad[2 * P];
    const float* as[2 * P];
    for (int r = 0; r < R; ++r) wb[r] = (const W*)(j.w + (r0 + r) * j.w_stride);
    for (int c = 0; c < 2 * P; ++c) {
        ab[c] = (const A*)(j.a + (c0 + c) * j.a_stride);
        ad[c] = j.ad + (size_t)(c0 + c) * j.nb;
        as[c] = is_signed ? nullptr : j.as + (size_t)(c0 + c) * j.nb;
    }
    for (int ib = 0; ib < j.nb; ++ib) {
        __m512i ax[R];
        __mmask64 neg[R];
        float dw[R];
        if (j.prefetch)
            for (int r = 0; r < R; ++r) _mm_prefetch((const char*)&wb[r][ib] + j.prefetch, _MM_HINT_T0);
        for (int r = 0; r < R; ++r) {
            const Unpacked u = unpack_avx2(wb[r][ib]);
            ax[r] = _mm512_broadcast_i64x4(u.ax);
            neg[r] = is_signed ? _mm512_movepi8_mask(_mm512_broadcast_i64x4(u.sx)) : 0;
            dw[r] = h2f_avx2(wb[r][ib].d);
        }
        for (int p = 0; p < P; ++p) {
            const __m512i qy = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)ab[2 * p][ib].qs)),
                _mm256_loadu_si256((const __m256i*)ab[2 * p + 1][ib].qs), 1);
            const __m512 da = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(ad[2 * p][ib])),
                                                 _mm256_set1_ps(ad[2 * p + 1][ib]), 1);
            for (int r = 0; r < R; ++r) {
                const __m512i sy = is_signed ? _mm512_mask_sub_epi8(qy, neg[r], _mm512_setzero_si512(), qy) : qy;
                const __m512 prod = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ax[r], sy));
                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(dw[r]), da), prod, acc[r][p]);
            }
        }
        if constexpr (!is_signed)
            for (int r = 0; r < R; ++r) {
                const float m = h2f_avx2(wb[r][ib].m);
                for (int c = 0; c < 2 * P; ++c) summs[r][c] = std::fma(m, as[c][ib], summs[r][c]);
            }
    }
    for (int p = 0; p < P; ++p)
        for (int r = 0; r < R; ++r) {
            j.y[(c0 + 2 * p) * j.y_stride + r0 + r] = hsum8_avx2(_mm512_castps512_ps256(acc[r][p])) + summs[r][2 * p];
            j.y[(c0 + 2 * p + 1) * j.y_stride + r0 + r] =
                hsum8_avx2(_mm512_extractf32x8_ps(acc[r][p], 1)) + summs[r][2 * p + 1];
        }
}

constexpr int k_tile512_rows = 4, k_tile512_pairs = 4;  // 4 rows x 8 columns: 16 accumulators

// Rows r0.. (n_rows in 1..k_tile512_rows) x columns c0.. (n_cols in 1..2 * k_tile512_pairs)
template <class W, class A, int R>
LANNER_AVX512 void rows_avx512(const Job& j, int r0, int c0, int n_cols) {
    switch (n_cols / 2) {
        case 4: tile_avx512<W, A, R, 4>(j, r0, c0); break;
        case 3: tile_avx512<W, A, R, 3>(j, r0, c0); break;
        case 2: tile_avx512<W, A, R, 2>(j, r0, c0); break;
        case 1: tile_avx512<W, A, R, 1>(j, r0, c0); break;
        default: break;
    }
    if (n_cols & 1) tile_avx2<W, A, R, 1>(j, r0, c0 + n_cols - 1);  // an odd column: the AVX2 tile
}

template <class W, class A>
LANNER_AVX512 void cols_avx512(const Job& j, int r0, int n_rows, int c0, int n_cols) {
    switch (n_rows) {
        case 4: return rows_avx512<W, A, 4>(j, r0, c0, n_cols);
        case 3: return rows_avx512<W, A, 3>(j, r0, c0, n_cols);
        case 2: return rows_avx512<W, A, 2>(j, r0, c0, n_cols);
        default: return rows_avx512<W, A, 1>(j, r0, c0, n_cols);
    }
}

#pragma GCC diagnostic pop

// Q4_K: one row x C columns per pass (the 32-byte halves of a super-block unpacked once for C).
template <int C>
LANNER_AVX2 void tile_q4k_avx2(const Job& j, int r, int c0) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc[C];
    __m128 acc_m[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps(), acc_m[c] = _mm_setzero_ps();
    const auto* wb = (const BlockQ4K*)(j.w + r * j.w_stride);
    const BlockQ8K* ab[C];
    for (int c = 0; c < C; ++c) ab[c] = (const BlockQ8K*)(j.a + (c0 + c) * j.a_stride);
    for (int ib = 0; ib < j.nb; ++ib) {
        if (j.prefetch)
            for (size_t o = 0; o < sizeof(BlockQ4K); o += 64) _mm_prefetch((const char*)&wb[ib] + j.prefetch + o, _MM_HINT_T0);
        uint8_t sc[8], mn[8];
        q4k_scales(wb[ib].scales, sc, mn);
        __m256i sumi[C];
        for (int c = 0; c < C; ++c) sumi[c] = _mm256_setzero_si256();
        for (int h = 0; h < 4; ++h) {
            const __m256i bits = _mm256_loadu_si256((const __m256i*)(wb[ib].qs + 32 * h));
            const __m256i lo = _mm256_and_si256(bits, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            const __m256i s_lo = _mm256_set1_epi16(sc[2 * h]), s_hi = _mm256_set1_epi16(sc[2 * h + 1]);
            for (int c = 0; c < C; ++c) {
                const __m256i yl = _mm256_loadu_si256((const __m256i*)(ab[c][ib].qs + 64 * h));
                const __m256i yh = _mm256_loadu_si256((const __m256i*)(ab[c][ib].qs + 64 * h + 32));
                const __m256i pl = _mm256_madd_epi16(s_lo, _mm256_maddubs_epi16(lo, yl));
                const __m256i ph = _mm256_madd_epi16(s_hi, _mm256_maddubs_epi16(hi, yh));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(pl, ph));
            }
        }
        const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)mn));  // 8 x int16
        const float dx = h2f_avx2(wb[ib].d), mx = h2f_avx2(wb[ib].dmin);
        for (int c = 0; c < C; ++c) {
            const __m256i bs = _mm256_loadu_si256((const __m256i*)ab[c][ib].bsums);
            const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            const __m128i pm = _mm_madd_epi16(mins, q8s);
            const float dy = ab[c][ib].d;
            acc_m[c] = _mm_fmadd_ps(_mm_set1_ps(-dy * mx), _mm_cvtepi32_ps(pm), acc_m[c]);
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dy * dx), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
        }
    }
    for (int c = 0; c < C; ++c) {
        __m128 m = _mm_add_ps(acc_m[c], _mm_movehl_ps(acc_m[c], acc_m[c]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        j.y[(c0 + c) * j.y_stride + r] = hsum8_avx2(acc[c]) + _mm_cvtss_f32(m);
    }
}

// Q6_K: one row x C columns per pass (each half super-block's 4 chunks unpacked once for C).
template <int C>
LANNER_AVX2 void tile_q6k_avx2(const Job& j, int r, int c0) {
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256 acc[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
    const auto* wb = (const BlockQ6K*)(j.w + r * j.w_stride);
    const BlockQ8K* ab[C];
    for (int c = 0; c < C; ++c) ab[c] = (const BlockQ8K*)(j.a + (c0 + c) * j.a_stride);
    for (int ib = 0; ib < j.nb; ++ib) {
        if (j.prefetch)
            for (size_t o = 0; o < sizeof(BlockQ6K); o += 64) _mm_prefetch((const char*)&wb[ib] + j.prefetch + o, _MM_HINT_T0);
        const BlockQ6K& b = wb[ib];
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)b.scales));  // 16 x int16
        __m256i sumi[C];
        for (int c = 0; c < C; ++c) {  // start from -32 * (bsums . scales), lane l: sub-blocks 2l, 2l+1
            const __m256i bs = _mm256_loadu_si256((const __m256i*)ab[c][ib].bsums);
            sumi[c] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
        }
        for (int h = 0; h < 2; ++h) {
            const __m256i l1 = _mm256_loadu_si256((const __m256i*)(b.ql + 64 * h));
            const __m256i l2 = _mm256_loadu_si256((const __m256i*)(b.ql + 64 * h + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i*)(b.qh + 32 * h));
            __m256i q[4], s[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l1, m15), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l2, m15), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), m15),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
            for (int t = 0; t < 4; ++t)
                s[t] = _mm256_set_m128i(_mm_set1_epi16(b.scales[8 * h + 2 * t + 1]), _mm_set1_epi16(b.scales[8 * h + 2 * t]));
            for (int c = 0; c < C; ++c)
                for (int t = 0; t < 4; ++t) {
                    const __m256i y = _mm256_loadu_si256((const __m256i*)(ab[c][ib].qs + 128 * h + 32 * t));
                    sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(s[t], _mm256_maddubs_epi16(q[t], y)));
                }
        }
        const float dx = h2f_avx2(b.d);
        for (int c = 0; c < C; ++c)
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(ab[c][ib].d * dx), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
    }
    for (int c = 0; c < C; ++c) j.y[(c0 + c) * j.y_stride + r] = hsum8_avx2(acc[c]);
}

LANNER_AVX2 void cols_q6k_avx2(const Job& j, int r, int c0, int n) {
    switch (n) {
        case 4: return tile_q6k_avx2<4>(j, r, c0);
        case 3: return tile_q6k_avx2<3>(j, r, c0);
        case 2: return tile_q6k_avx2<2>(j, r, c0);
        default: return tile_q6k_avx2<1>(j, r, c0);
    }
}

LANNER_AVX2 void cols_q4k_avx2(const Job& j, int r, int c0, int n) {
    switch (n) {
        case 4: return tile_q4k_avx2<4>(j, r, c0);
        case 3: return tile_q4k_avx2<3>(j, r, c0);
        case 2: return tile_q4k_avx2<2>(j, r, c0);
        default: return tile_q4k_avx2<1>(j, r, c0);
    }
}

// K-quants in AVX-512: R rows x P column pairs, each column's lanes as in the AVX2 tiles above
// (the integer lanes are exact sums, so their order does not matter; the float lanes take the
// same fused multiply-adds per super-block). 16-column-lane registers: [column 2p | column 2p+1].
#pragma GCC diagnostic push  // see the AVX-512 tile above
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

LANNER_AVX512 inline __m512i pair_load(const int8_t* a, const int8_t* b) {  // [32 bytes of a | of b]
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a)),
                              _mm256_loadu_si256((const __m256i*)b), 1);
}
LANNER_AVX512 inline __m512 pair_set(float a, float b) {  // [a x 8 | b x 8]
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(a)), _mm256_set1_ps(b), 1);
}
LANNER_AVX512 inline __m512i pair_join(__m256i a, __m256i b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

template <int R, int P>
LANNER_AVX512 void tile_q4k_avx512(const Job& j, int r0, int c0) {
    constexpr int C = 2 * P;
    const __m256i m4 = _mm256_set1_epi8(15);
    __m512 acc[R][P];
    __m128 acc_m[R][C];
    for (int r = 0; r < R; ++r) {
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
        for (int c = 0; c < C; ++c) acc_m[r][c] = _mm_setzero_ps();
    }
    const BlockQ4K* wb[R];
    const BlockQ8K* ab[C];
    for (int r = 0; r < R; ++r) wb[r] = (const BlockQ4K*)(j.w + (r0 + r) * j.w_stride);
    for (int c = 0; c < C; ++c) ab[c] = (const BlockQ8K*)(j.a + (c0 + c) * j.a_stride);
    for (int ib = 0; ib < j.nb; ++ib) {
        if (j.prefetch)
            for (int r = 0; r < R; ++r)
                for (size_t o = 0; o < sizeof(BlockQ4K); o += 64)
                    _mm_prefetch((const char*)&wb[r][ib] + j.prefetch + o, _MM_HINT_T0);
        uint8_t sc[R][8], mn[R][8];
        for (int r = 0; r < R; ++r) q4k_scales(wb[r][ib].scales, sc[r], mn[r]);
        __m512i sumi[R][P];
        for (int r = 0; r < R; ++r)
            for (int p = 0; p < P; ++p) sumi[r][p] = _mm512_setzero_si512();
        for (int h = 0; h < 4; ++h) {
            __m512i lo[R], hi[R], s_lo[R], s_hi[R];
            for (int r = 0; r < R; ++r) {
                const __m256i bits = _mm256_loadu_si256((const __m256i*)(wb[r][ib].qs + 32 * h));
                lo[r] = _mm512_broadcast_i64x4(_mm256_and_si256(bits, m4));
                hi[r] = _mm512_broadcast_i64x4(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4));
                s_lo[r] = _mm512_set1_epi16(sc[r][2 * h]);
                s_hi[r] = _mm512_set1_epi16(sc[r][2 * h + 1]);
            }
            for (int p = 0; p < P; ++p) {
                const __m512i yl = pair_load(ab[2 * p][ib].qs + 64 * h, ab[2 * p + 1][ib].qs + 64 * h);
                const __m512i yh = pair_load(ab[2 * p][ib].qs + 64 * h + 32, ab[2 * p + 1][ib].qs + 64 * h + 32);
                for (int r = 0; r < R; ++r) {
                    const __m512i pl = _mm512_madd_epi16(s_lo[r], _mm512_maddubs_epi16(lo[r], yl));
                    const __m512i ph = _mm512_madd_epi16(s_hi[r], _mm512_maddubs_epi16(hi[r], yh));
                    sumi[r][p] = _mm512_add_epi32(sumi[r][p], _mm512_add_epi32(pl, ph));
                }
            }
        }
        __m128i q8s[C];  // the columns' sums of 32, as the AVX2 tile forms them
        for (int c = 0; c < C; ++c) {
            const __m256i bs = _mm256_loadu_si256((const __m256i*)ab[c][ib].bsums);
            q8s[c] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        }
        for (int r = 0; r < R; ++r) {
            const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)mn[r]));
            const float dx = h2f_avx2(wb[r][ib].d), mx = h2f_avx2(wb[r][ib].dmin);
            for (int c = 0; c < C; ++c) {
                const float dy = ab[c][ib].d;
                acc_m[r][c] = _mm_fmadd_ps(_mm_set1_ps(-dy * mx), _mm_cvtepi32_ps(_mm_madd_epi16(mins, q8s[c])), acc_m[r][c]);
            }
            for (int p = 0; p < P; ++p) {
                const __m512 d = pair_set(ab[2 * p][ib].d * dx, ab[2 * p + 1][ib].d * dx);
                acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
            const __m256 a = c & 1 ? _mm512_extractf32x8_ps(acc[r][c / 2], 1) : _mm512_castps512_ps256(acc[r][c / 2]);
            __m128 m = _mm_add_ps(acc_m[r][c], _mm_movehl_ps(acc_m[r][c], acc_m[r][c]));
            m = _mm_add_ss(m, _mm_movehdup_ps(m));
            j.y[(c0 + c) * j.y_stride + r0 + r] = hsum8_avx2(a) + _mm_cvtss_f32(m);
        }
}

template <int R, int P>
LANNER_AVX512 void tile_q6k_avx512(const Job& j, int r0, int c0) {
    constexpr int C = 2 * P;
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m512 acc[R][P];
    for (int r = 0; r < R; ++r)
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
    const BlockQ6K* wb[R];
    const BlockQ8K* ab[C];
    for (int r = 0; r < R; ++r) wb[r] = (const BlockQ6K*)(j.w + (r0 + r) * j.w_stride);
    for (int c = 0; c < C; ++c) ab[c] = (const BlockQ8K*)(j.a + (c0 + c) * j.a_stride);
    for (int ib = 0; ib < j.nb; ++ib) {
        if (j.prefetch)
            for (int r = 0; r < R; ++r)
                for (size_t o = 0; o < sizeof(BlockQ6K); o += 64)
                    _mm_prefetch((const char*)&wb[r][ib] + j.prefetch + o, _MM_HINT_T0);
        __m512i sumi[R][P];
        for (int r = 0; r < R; ++r) {  // start from -32 * (bsums . scales), lane l: sub-blocks 2l, 2l+1
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)wb[r][ib].scales));
            for (int p = 0; p < P; ++p) {
                __m256i s0[2];
                for (int k = 0; k < 2; ++k) {
                    const __m256i bs = _mm256_loadu_si256((const __m256i*)ab[2 * p + k][ib].bsums);
                    s0[k] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
                }
                sumi[r][p] = pair_join(s0[0], s0[1]);
            }
        }
        for (int h = 0; h < 2; ++h) {
            __m512i q[R][4], s[R][4];
            for (int r = 0; r < R; ++r) {
                const BlockQ6K& b = wb[r][ib];
                const __m256i l1 = _mm256_loadu_si256((const __m256i*)(b.ql + 64 * h));
                const __m256i l2 = _mm256_loadu_si256((const __m256i*)(b.ql + 64 * h + 32));
                const __m256i hb = _mm256_loadu_si256((const __m256i*)(b.qh + 32 * h));
                q[r][0] = _mm512_broadcast_i64x4(_mm256_or_si256(_mm256_and_si256(l1, m15),
                                                                 _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)));
                q[r][1] = _mm512_broadcast_i64x4(_mm256_or_si256(
                    _mm256_and_si256(l2, m15), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4)));
                q[r][2] = _mm512_broadcast_i64x4(_mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4)));
                q[r][3] = _mm512_broadcast_i64x4(_mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l2, 4), m15),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4)));
                for (int t = 0; t < 4; ++t)
                    s[r][t] = _mm512_broadcast_i64x4(_mm256_set_m128i(_mm_set1_epi16(b.scales[8 * h + 2 * t + 1]),
                                                                      _mm_set1_epi16(b.scales[8 * h + 2 * t])));
            }
            for (int p = 0; p < P; ++p)
                for (int t = 0; t < 4; ++t) {
                    const __m512i y = pair_load(ab[2 * p][ib].qs + 128 * h + 32 * t, ab[2 * p + 1][ib].qs + 128 * h + 32 * t);
                    for (int r = 0; r < R; ++r)
                        sumi[r][p] = _mm512_add_epi32(sumi[r][p], _mm512_madd_epi16(s[r][t], _mm512_maddubs_epi16(q[r][t], y)));
                }
        }
        for (int r = 0; r < R; ++r) {
            const float dx = h2f_avx2(wb[r][ib].d);
            for (int p = 0; p < P; ++p)
                acc[r][p] = _mm512_fmadd_ps(pair_set(ab[2 * p][ib].d * dx, ab[2 * p + 1][ib].d * dx),
                                            _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int p = 0; p < P; ++p) {
            j.y[(c0 + 2 * p) * j.y_stride + r0 + r] = hsum8_avx2(_mm512_castps512_ps256(acc[r][p]));
            j.y[(c0 + 2 * p + 1) * j.y_stride + r0 + r] = hsum8_avx2(_mm512_extractf32x8_ps(acc[r][p], 1));
        }
}
#pragma GCC diagnostic pop

constexpr int k_tile512k_rows = 2, k_tile512k_pairs = 4;  // K-quants: 2 rows x 8 columns

// Rows r0.. (n_rows in 1..k_tile512k_rows) x columns c0.. (n_cols in 1..2 * k_tile512k_pairs)
template <int R, int P>
struct Q4KTile { static LANNER_AVX512 void run(const Job& j, int r0, int c0) { tile_q4k_avx512<R, P>(j, r0, c0); } };
template <int R, int P>
struct Q6KTile { static LANNER_AVX512 void run(const Job& j, int r0, int c0) { tile_q6k_avx512<R, P>(j, r0, c0); } };

template <template <int, int> class T, int R>
LANNER_AVX512 void krows_avx512(const Job& j, int r0, int c0, int n_cols, void (*avx2)(const Job&, int, int, int)) {
    switch (n_cols / 2) {
        case 4: T<R, 4>::run(j, r0, c0); break;
        case 3: T<R, 3>::run(j, r0, c0); break;
        case 2: T<R, 2>::run(j, r0, c0); break;
        case 1: T<R, 1>::run(j, r0, c0); break;
        default: break;
    }
    if (n_cols & 1)  // an odd column: the AVX2 tile, row by row
        for (int r = r0; r < r0 + R; ++r) avx2(j, r, c0 + n_cols - 1, 1);
}

template <template <int, int> class T>
LANNER_AVX512 void kcols_avx512(const Job& j, int r0, int n_rows, int c0, int n_cols,
                                void (*avx2)(const Job&, int, int, int)) {
    if (n_rows == 2) return krows_avx512<T, 2>(j, r0, c0, n_cols, avx2);
    krows_avx512<T, 1>(j, r0, c0, n_cols, avx2);
}

const bool k_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
const bool k_avx512 = k_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512vnni");
#else
const bool k_avx2 = false;
const bool k_avx512 = false;
void cols_q4k_avx2(const Job&, int, int, int) {}  // never called without AVX2 (k_avx2 false)
template <class W, class A>
void cols_avx512(const Job&, int, int, int, int) {}  // never called (k_avx512 false)
template <int R, int P>
struct Q4KTile {};
template <int R, int P>
struct Q6KTile {};
void cols_q6k_avx2(const Job&, int, int, int) {}
#endif

// The widest build this CPU runs; LANNER_MM_Q_ISA=avx2 keeps the AVX2 tiles (for comparison).
Isa best_isa() {
    static const Isa isa = [] {
        const char* e = std::getenv("LANNER_MM_Q_ISA");
        if (k_avx512 && !(e && std::strcmp(e, "avx2") == 0)) return Isa::avx512;
        return k_avx2 ? Isa::avx2 : Isa::scalar;
    }();
    return isa;
}

// A single column (a decode step) reads each weight byte once for two flops per element: the
// multiply waits on memory, not arithmetic. ggml's vec_dot does one row at a time with one
// accumulator chain and leaves the fetching to the hardware prefetcher, which stops at every
// 4 KiB page and reached ~13 GB/s of Q4_1 weights on a 2-core Zen 3 (DRAM ~34 GB/s). Four
// rows per pass (four independent chains sharing X's loads) and software prefetches 16 rows
// ahead reach ~20 GB/s there (lanner-bench-matmul -c 1 -w 192): Q4_1 1.5x, Q5_0 1.4x.
// Q8_0 (34-byte blocks, little arithmetic per byte) goes one row per pass: four rows at once
// read four streams 4 row lengths apart, which on a 2-core Zen 5 reached 37-45 GB/s against
// 50-55 for one row with the same prefetching (ggml: 31; Gemma 3's decode step, whose 262k x
// 640 Q8_0 output head is 170 of its 235 MiB: 8.8 -> 6.7 ms).
// A few columns (2-8 sequences decoding together) stream the weights too: a row pair's (K-quants:
// a row's) first tile of columns prefetches the same way (Gemma 3, 2 threads: a 2-sequence step
// 18 -> 8.9 ms, 4 sequences 27.7 -> 14.4 ms; without it the 2-row passes read ~10 GB/s).
// Same arithmetic per element, so the same bits.
template <class W>
constexpr int k_mv_rows = std::is_same<W, BlockQ8_0>::value ? 1 : 4;
constexpr int k_mv_prefetch_rows = 16;

// Rows [r_begin, r_end) x columns [0, M): column blocks of 64 keep their quantized X in cache
// while a row pair's blocks stay in L1 across the block's tiles of 4 columns.
template <class W, class A>
void run_rows(const Job& j, int r_begin, int r_end, int M, Isa isa) {
    constexpr int k_col_block = 64;
    const bool avx2 = isa != Isa::scalar;
#ifdef LANNER_X86
    if (avx2 && M == 1) {  // a decode step's matrix-vector product: see k_mv_rows
        Job jp = j;
        jp.prefetch = k_mv_prefetch_rows * j.w_stride;
        int r = r_begin;
        for (; r + k_mv_rows<W> <= r_end; r += k_mv_rows<W>) tile_avx2<W, A, k_mv_rows<W>, 1>(jp, r, 0);
        for (; r < r_end; ++r) tile_avx2<W, A, 1, 1>(jp, r, 0);
        return;
    }
#endif
    Job jp = j;  // a row pair's first tile of columns fetches the rows 16 ahead (see k_mv_rows)
    jp.prefetch = k_mv_prefetch_rows * j.w_stride;
#ifdef LANNER_X86
    if (isa == Isa::avx512) {
        for (int cb = 0; cb < M; cb += k_col_block) {
            const int ce = std::min(M, cb + k_col_block);
            for (int r = r_begin; r < r_end; r += k_tile512_rows) {
                const int nr = std::min(k_tile512_rows, r_end - r);
                for (int c = cb; c < ce; c += 2 * k_tile512_pairs)
                    cols_avx512<W, A>(c == cb ? jp : j, r, nr, c, std::min(2 * k_tile512_pairs, ce - c));
            }
        }
        return;
    }
#endif
    for (int cb = 0; cb < M; cb += k_col_block) {
        const int ce = std::min(M, cb + k_col_block);
        for (int r = r_begin; r < r_end; r += 2) {
            const int nr = std::min(2, r_end - r);
            for (int c = cb; c < ce; c += 4) {
                const int nc = std::min(4, ce - c);
#ifdef LANNER_X86
                if (avx2) {
                    const Job& jt = c == cb ? jp : j;
                    nr == 2 ? cols_avx2<W, A, 2>(jt, r, c, nc) : cols_avx2<W, A, 1>(jt, r, c, nc);
                    continue;
                }
#endif
                for (int rr = r; rr < r + nr; ++rr)
                    for (int cc = c; cc < c + nc; ++cc) rows_scalar<W, A>(j, rr, cc);
            }
        }
    }
}

// K-quants: one row x up to 4 columns per pass (AVX-512: 2 rows x 4 columns).
template <void (*Scalar)(const Job&, int, int), void (*Avx2)(const Job&, int, int, int), template <int, int> class T512>
void run_rows_k(const Job& j, int r_begin, int r_end, int M, Isa isa) {
    const bool avx2 = isa != Isa::scalar;
    constexpr int k_col_block = 64;
    Job jp = j;  // a row's first tile of columns fetches the row 16 ahead
    jp.prefetch = k_mv_prefetch_rows * j.w_stride;
#ifdef LANNER_X86
    if (isa == Isa::avx512) {
        for (int cb = 0; cb < M; cb += k_col_block) {
            const int ce = std::min(M, cb + k_col_block);
            for (int r = r_begin; r < r_end; r += k_tile512k_rows)
                for (int c = cb; c < ce; c += 2 * k_tile512k_pairs)
                    kcols_avx512<T512>(c == cb ? jp : j, r, std::min(k_tile512k_rows, r_end - r), c,
                                       std::min(2 * k_tile512k_pairs, ce - c), Avx2);
        }
        return;
    }
#endif
    for (int cb = 0; cb < M; cb += k_col_block) {
        const int ce = std::min(M, cb + k_col_block);
        for (int r = r_begin; r < r_end; ++r)
            for (int c = cb; c < ce; c += 4) {
                const int nc = std::min(4, ce - c);
#ifdef LANNER_X86
                if (avx2) {
                    Avx2(c == cb ? jp : j, r, c, nc);
                    continue;
                }
#endif
                for (int cc = c; cc < c + nc; ++cc) Scalar(j, r, cc);
            }
    }
}

void run_type(ggml_type type, const Job& j, int r_begin, int r_end, int M, Isa isa) {
    switch (type) {
        case GGML_TYPE_Q4_K: return run_rows_k<rows_q4k_scalar, cols_q4k_avx2, Q4KTile>(j, r_begin, r_end, M, isa);
        case GGML_TYPE_Q6_K: return run_rows_k<rows_q6k_scalar, cols_q6k_avx2, Q6KTile>(j, r_begin, r_end, M, isa);
        case GGML_TYPE_Q8_0: return run_rows<BlockQ8_0, BlockQ8_0>(j, r_begin, r_end, M, isa);
        case GGML_TYPE_Q4_0: return run_rows<BlockQ4_0, BlockQ8_0>(j, r_begin, r_end, M, isa);
        case GGML_TYPE_Q5_0: return run_rows<BlockQ5_0, BlockQ8_0>(j, r_begin, r_end, M, isa);
        case GGML_TYPE_Q4_1: return run_rows<BlockQ4_1, BlockQ8_1>(j, r_begin, r_end, M, isa);
        default: return;
    }
}

bool type_supported(ggml_type t) {
    return t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q5_0 || t == GGML_TYPE_Q4_1 ||
           t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q6_K;
}

// X's columns quantized by ggml's from_float for the weight type's dot type, with their block
// scales as floats. One per thread: every thread quantizes all columns (cheap next to the
// multiply) so the op needs no barrier.
struct QuantizedX {
    std::vector<uint8_t> q;  // [M][row_bytes]
    std::vector<float> d, s;  // [M][nb]
    size_t row_bytes = 0;

    void fill(ggml_type w_type, const char* x, size_t x_stride, int64_t K, int64_t M) {
        const ggml_type_traits_cpu* tw = ggml_get_type_traits_cpu(w_type);
        const ggml_type vt = tw->vec_dot_type;
        const ggml_from_float_t from_float = ggml_get_type_traits_cpu(vt)->from_float;
        const int nb = (int)(K / ggml_blck_size(vt));
        row_bytes = ggml_row_size(vt, K);
        q.resize(row_bytes * M);
        d.resize((size_t)nb * M);
        s.resize(vt == GGML_TYPE_Q8_1 ? (size_t)nb * M : 0);
        for (int64_t c = 0; c < M; ++c) {
            uint8_t* qc = q.data() + c * row_bytes;
            from_float((const float*)(x + c * x_stride), qc, K);
            for (int ib = 0; ib < nb; ++ib) {
                if (vt == GGML_TYPE_Q8_K) {
                    d[c * nb + ib] = ((const BlockQ8K*)qc + ib)->d;
                } else if (vt == GGML_TYPE_Q8_1) {
                    const auto* b = (const BlockQ8_1*)qc + ib;
                    d[c * nb + ib] = h2f(b->d), s[c * nb + ib] = h2f(b->s);
                } else {
                    d[c * nb + ib] = h2f(((const BlockQ8_0*)qc + ib)->d);
                }
            }
        }
    }
};

// dst [N, M] = src[0] [K, N] (quantized) x src[1] F32 [K, M]; rows of W split over the threads.
void mul_mat_q_compute(ggml_tensor* dst, int ith, int nth, void* userdata) {
    const ggml_tensor *w = dst->src[0], *x = dst->src[1];
    const int64_t K = w->ne[0], N = w->ne[1], M = x->ne[1];
    int64_t per = (N + nth - 1) / nth;
    per += per & 1;  // row pairs stay in one thread
    const int64_t r_begin = std::min<int64_t>(N, ith * per), r_end = std::min<int64_t>(N, r_begin + per);
    if (r_begin >= r_end) return;
    thread_local QuantizedX qx;
    qx.fill(w->type, (const char*)x->data, x->nb[1], K, M);
    const Job j{(const char*)w->data, w->nb[1], (int)(K / ggml_blck_size(w->type)), (const char*)qx.q.data(), qx.row_bytes,
                qx.d.data(), qx.s.data(), (float*)dst->data, dst->nb[1] / sizeof(float)};
    run_type(w->type, j, (int)r_begin, (int)r_end, (int)M, best_isa());
}

}  // namespace

bool mul_mat_q_single_column_faster(ggml_type type) {
    return type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q8_0;
}

bool mul_mat_q_type_supported(ggml_type type, int64_t K) {
    return type_supported(type) && K > 0 && K % ggml_blck_size(type) == 0;
}

bool mul_mat_q_supported(const ggml_tensor* w, const ggml_tensor* x) {
    return k_avx2 && mul_mat_q_type_supported(w->type, w->ne[0]) && w->ne[2] == 1 && w->ne[3] == 1 &&
           w->nb[0] == ggml_type_size(w->type) && w->nb[1] == ggml_row_size(w->type, w->ne[0]) &&
           w->buffer && ggml_backend_buffer_is_host(w->buffer) &&
           x->type == GGML_TYPE_F32 && x->ne[0] == w->ne[0] && x->ne[2] == 1 && x->ne[3] == 1 &&
           x->nb[0] == sizeof(float);
}

ggml_tensor* mul_mat_q(ggml_context* ctx, ggml_tensor* w, ggml_tensor* x) {
    ggml_tensor* args[2] = {w, x};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, mul_mat_q_compute,
                          GGML_N_TASKS_MAX, nullptr);
}

bool mul_mat_q_isa_available(Isa isa) {
    return isa == Isa::scalar || (isa == Isa::avx2 && k_avx2) || (isa == Isa::avx512 && k_avx512);
}

bool mul_mat_q_host(ggml_type type, const void* w, int64_t K, int64_t N, const float* x, int64_t M, float* y,
                    Isa isa) {
    if (!mul_mat_q_type_supported(type, K) || !mul_mat_q_isa_available(isa)) return false;
    QuantizedX qx;
    qx.fill(type, (const char*)x, K * sizeof(float), K, M);
    const Job j{(const char*)w, ggml_row_size(type, K), (int)(K / ggml_blck_size(type)), (const char*)qx.q.data(), qx.row_bytes,
                qx.d.data(), qx.s.data(), y, (size_t)N};
    run_type(type, j, 0, (int)N, (int)M, isa);
    return true;
}

}  // namespace lanner
