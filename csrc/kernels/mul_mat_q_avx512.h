// mul_mat_q's AVX-512 build (F/BW/DQ/VL + VNNI): the multi-column tiles with two columns per
// 512-bit register, each column's lanes as in the AVX2 build; an odd column goes to the AVX2 tile.
// Internal to mul_mat_q.cpp (its only includer), which is built with -ffp-contract=off: every
// fused multiply-add is written out, as in the kernel whose rounding it keeps.
#pragma once
#include <cmath>
#include <cstring>
#include <type_traits>

#include "mul_mat_q_avx2.h"

namespace lanner::mmq {

#ifdef LANNER_X86
// AVX-512 (VNNI): the same arithmetic with two columns side by side in a 512-bit register. A
// column's lanes hold what the AVX2 tile's 256-bit register holds. Its int32 lanes are exact
// sums of four products w * y (the AVX2 build's maddubs never saturates: |w| <= 128, |y| <=
// 127), formed here as vpdpbusd of the stored unsigned bytes u = w + offset (u8_offset in
// mul_mat_q_blocks.h) and y, started from -offset x the four y's sum, precomputed per column
// pair (QuantizedX::pair in mul_mat_q.cpp): the same integers. Each column's float lanes then
// take the same fused multiply-adds in block order.
#define LANNER_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")))
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*() and warn about it
// (GCC bug 105593) once they are inlined here: not about this code.
#pragma GCC diagnostic push
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

// A block's 32 stored values as unsigned bytes, in both 256-bit halves.
LANNER_AVX512 inline __m512i unpack_u8_512(const BlockQ8_0& b) {
    return _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)b.qs)),
                            _mm512_set1_epi8((char)0x80));
}
LANNER_AVX512 inline __m512i unpack_u8_512(const BlockQ4_0& b) { return _mm512_broadcast_i64x4(nibbles_avx2(b.qs)); }
LANNER_AVX512 inline __m512i unpack_u8_512(const BlockQ4_1& b) { return _mm512_broadcast_i64x4(nibbles_avx2(b.qs)); }
LANNER_AVX512 inline __m512i unpack_u8_512(const BlockQ5_0& b) {  // nibble | fifth bit << 4
    const __m256i high = _mm256_and_si256(q5_high_avx2(b), _mm256_set1_epi8(16));
    return _mm512_broadcast_i64x4(_mm256_or_si256(nibbles_avx2(b.qs), high));
}

template <class W, class A, int R, int P>  // R rows x P column pairs; c0 even (pair c0 / 2 first)
LANNER_AVX512 void tile_avx512(const Job& j, int r0, int c0) {
    constexpr bool is_q4_1 = std::is_same<W, BlockQ4_1>::value;
    constexpr int offset = u8_offset(k_block_type<W>);
    __m512 acc[R][P];
    __m256 summs[R];  // Q4_1's min term: lane c = column c0 + c, the AVX2 tile's scalar chain per lane
    for (int r = 0; r < R; ++r) {
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
        summs[r] = _mm256_setzero_ps();
    }
    const W* wb[R];
    for (int r = 0; r < R; ++r) wb[r] = (const W*)(j.w + (r0 + r) * j.w_stride);
    const __mmask8 cols = (__mmask8)((1u << (2 * P)) - 1);
    const size_t pair0 = (size_t)(c0 / 2) * j.nb;  // index of pair c0/2's block 0
    for (int ib = 0; ib < j.nb; ++ib) {
        __m512i ax[R];
        __m512 dw[R];
        if (j.prefetch)
            for (int r = 0; r < R; ++r) _mm_prefetch((const char*)&wb[r][ib] + j.prefetch, _MM_HINT_T0);
        for (int r = 0; r < R; ++r) ax[r] = unpack_u8_512(wb[r][ib]), dw[r] = _mm512_set1_ps(h2f_avx2(wb[r][ib].d));
        for (int p = 0; p < P; ++p) {
            const size_t k = pair0 + (size_t)p * j.nb + ib;
            const __m512i qy = _mm512_loadu_si512(j.y2 + 64 * k);
            const float* ad = j.ad + (size_t)(c0 + 2 * p) * j.nb + ib;  // the two columns' block scales
            const __m512 da = pair_set(ad[0], ad[j.nb]);
            const __m512i start = offset ? _mm512_loadu_si512(j.corr2 + 16 * k) : _mm512_setzero_si512();
            for (int r = 0; r < R; ++r) {
                const __m512 prod = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, ax[r], qy));
                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], da), prod, acc[r][p]);
            }
        }
        if constexpr (is_q4_1) {
            const __m256 as = _mm256_maskz_loadu_ps(cols, j.as_t + (size_t)ib * j.as_t_stride + c0);
            for (int r = 0; r < R; ++r) summs[r] = _mm256_fmadd_ps(_mm256_set1_ps(h2f_avx2(wb[r][ib].m)), as, summs[r]);
        }
    }
    for (int r = 0; r < R; ++r) {
        alignas(32) float sm[8];
        _mm256_store_ps(sm, summs[r]);
        for (int p = 0; p < P; ++p) {
            j.y[(c0 + 2 * p) * j.y_stride + r0 + r] = hsum8_avx2(_mm512_castps512_ps256(acc[r][p])) + sm[2 * p];
            j.y[(c0 + 2 * p + 1) * j.y_stride + r0 + r] = hsum8_avx2(_mm512_extractf32x8_ps(acc[r][p], 1)) + sm[2 * p + 1];
        }
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

// K-quants in AVX-512: R rows x P column pairs, each column's lanes as in the AVX2 tiles above
// (the integer lanes are exact sums, so their order does not matter; the float lanes take the
// same fused multiply-adds per super-block). 16-column-lane registers: [column 2p | column 2p+1].
#pragma GCC diagnostic push  // see the AVX-512 tile above
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

template <int R, int P>
LANNER_AVX512 void tile_q4k_avx512(const Job& j, int r0, int c0) {
    constexpr int C = 2 * P;
    const __m256i m4 = _mm256_set1_epi8(15);
    constexpr int G = (C + 3) / 4;  // the mins' term: 4 lanes per column, 4 columns per register
    __m512 acc[R][P], acc_m[R][G];
    for (int r = 0; r < R; ++r) {
        for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
        for (int g = 0; g < G; ++g) acc_m[r][g] = _mm512_setzero_ps();
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
        // the columns' sums of 32 as the AVX2 tile forms them (8 int16 each), 4 columns per
        // register, and their -dy in the same 4-lane groups (0 past the last column)
        __m512i q8s[G];
        __m512 neg_dy[G];
        for (int g = 0; g < G; ++g) {
            alignas(64) int16_t qv[32] = {};
            alignas(64) float dv[16] = {};
            for (int k = 0; k < 4 && 4 * g + k < C; ++k) {
                const BlockQ8K& b = ab[4 * g + k][ib];
                const __m256i bs = _mm256_loadu_si256((const __m256i*)b.bsums);
                _mm_store_si128((__m128i*)(qv + 8 * k),
                                _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
                for (int l = 0; l < 4; ++l) dv[4 * k + l] = -b.d;
            }
            q8s[g] = _mm512_load_si512(qv);
            neg_dy[g] = _mm512_load_ps(dv);
        }
        for (int r = 0; r < R; ++r) {
            const __m512i mins = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)mn[r])));
            const float dx = h2f_avx2(wb[r][ib].d), mx = h2f_avx2(wb[r][ib].dmin);
            for (int g = 0; g < G; ++g)  // lanes: (-dy) * mx, as the AVX2 tile's -dy * mx
                acc_m[r][g] = _mm512_fmadd_ps(_mm512_mul_ps(neg_dy[g], _mm512_set1_ps(mx)),
                                              _mm512_cvtepi32_ps(_mm512_madd_epi16(mins, q8s[g])), acc_m[r][g]);
            for (int p = 0; p < P; ++p) {
                const __m512 d = pair_set(ab[2 * p][ib].d * dx, ab[2 * p + 1][ib].d * dx);
                acc[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[r][p]), acc[r][p]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
            const __m256 a = c & 1 ? _mm512_extractf32x8_ps(acc[r][c / 2], 1) : _mm512_castps512_ps256(acc[r][c / 2]);
            alignas(64) float mv[16];
            _mm512_store_ps(mv, acc_m[r][c / 4]);
            const __m128 am = _mm_load_ps(mv + 4 * (c % 4));
            __m128 m = _mm_add_ps(am, _mm_movehl_ps(am, am));
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

#pragma GCC diagnostic push  // see the first AVX-512 tile
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// X for the K-quants: ggml's quantize_row_q8_K_ref (what its from_float runs on x86) in 16
// lanes, value for value: per super-block of 256, the first element of largest magnitude sets
// iscale = -127 / it, each q = min(127, nearest_int(iscale * x)) by the same float operations
// (a product, then + 1.5 * 2^23 whose low mantissa bits are the rounded integer), d = 1 / iscale,
// bsums the exact sums of 16.
LANNER_AVX512 inline void quantize_q8k_avx512(const float* x, BlockQ8K* y, int64_t k) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t ib = 0; ib < k / 256; ++ib, x += 256) {
        BlockQ8K& b = y[ib];
        __m512 mx = _mm512_setzero_ps();
        // max(|x|, mx) keeps mx where |x| is NaN (the second operand wins), as the reference's
        // `if (ax > amax)` skips NaNs
        for (int i = 0; i < 16; ++i) mx = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * i)), mx);
        const float amax = _mm512_reduce_max_ps(mx);
        if (amax == 0.0f) {  // as the reference: d 0, all zeros
            std::memset(&b, 0, sizeof(b));
            continue;
        }
        int first = 0;
        for (int i = 0; i < 16; ++i) {
            const __mmask16 at = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * i)),
                                                    _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (at) {
                first = 16 * i + __builtin_ctz(at);
                break;
            }
        }
        const float iscale = -127.0f / x[first];
        const __m512 vs = _mm512_set1_ps(iscale), magic = _mm512_set1_ps(12582912.0f);
        for (int i = 0; i < 16; ++i) {
            const __m512 v = _mm512_add_ps(_mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * i)), magic);
            const __m512i q = _mm512_min_epi32(
                _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x007fffff)),
                                 _mm512_set1_epi32(0x00400000)),
                _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i*)(b.qs + 16 * i), _mm512_cvtepi32_epi8(q));
            b.bsums[i] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        b.d = 1.0f / iscale;
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
#endif  // LANNER_X86

}  // namespace lanner::mmq
