// mul_mat_q's AVX2 build: R rows x C columns per pass in 256-bit registers, the arithmetic of
// ggml's AVX2 vec_dot per output element. x86 only (LANNER_X86); run where the CPU has AVX2/FMA/F16C.
// Internal to mul_mat_q.cpp (its only includer), which is built with -ffp-contract=off: every
// fused multiply-add is written out, as in the kernel whose rounding it keeps.
#pragma once
#include <cmath>
#include <cstring>
#include <type_traits>

#include "mul_mat_q_blocks.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LANNER_X86 1
#endif

namespace lanner::mmq {

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
// Q5_0's fifth bits: byte e = 0xFF where bit e of qh is set (the 4 bytes of qh spread over 8
// bytes each, one bit tested per byte).
LANNER_AVX2 inline __m256i q5_high_avx2(const BlockQ5_0& b) {
    uint32_t h;
    std::memcpy(&h, b.qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                               _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                                 0x0101010101010101, 0x0000000000000000));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}
LANNER_AVX2 inline Unpacked unpack_avx2(const BlockQ5_0& b) {
    const __m256i set = q5_high_avx2(b);
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
    float summs[R][C];  // Q4_1's min term, one fma chain per output (4 lanes per row below when
    __m128 summs_v[R];  // the columns come transposed: Job::as_t)
    for (int r = 0; r < R; ++r) {
        summs_v[r] = _mm_setzero_ps();
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps(), summs[r][c] = 0.0f;
    }
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
        if constexpr (!is_signed) {
            if (C >= 2 && j.as_t) {  // the columns' chains side by side, lane c = column c0 + c
                const __m128 asv = _mm_loadu_ps(j.as_t + (size_t)ib * j.as_t_stride + c0);  // (slack past M)
                for (int r = 0; r < R; ++r) summs_v[r] = _mm_fmadd_ps(_mm_set1_ps(h2f_avx2(wb[r][ib].m)), asv, summs_v[r]);
            } else {
                for (int r = 0; r < R; ++r) {
                    const float m = h2f_avx2(wb[r][ib].m);
                    for (int c = 0; c < C; ++c) summs[r][c] = std::fma(m, as[c][ib], summs[r][c]);
                }
            }
        }
    }
    if (!is_signed && C >= 2 && j.as_t)
        for (int r = 0; r < R; ++r) {
            alignas(16) float sv[4];
            _mm_store_ps(sv, summs_v[r]);
            for (int c = 0; c < C; ++c) summs[r][c] = sv[c];
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

LANNER_AVX2 inline void cols_q6k_avx2(const Job& j, int r, int c0, int n) {
    switch (n) {
        case 4: return tile_q6k_avx2<4>(j, r, c0);
        case 3: return tile_q6k_avx2<3>(j, r, c0);
        case 2: return tile_q6k_avx2<2>(j, r, c0);
        default: return tile_q6k_avx2<1>(j, r, c0);
    }
}

LANNER_AVX2 inline void cols_q4k_avx2(const Job& j, int r, int c0, int n) {
    switch (n) {
        case 4: return tile_q4k_avx2<4>(j, r, c0);
        case 3: return tile_q4k_avx2<3>(j, r, c0);
        case 2: return tile_q4k_avx2<2>(j, r, c0);
        default: return tile_q4k_avx2<1>(j, r, c0);
    }
}
#endif  // LANNER_X86

}  // namespace lanner::mmq
