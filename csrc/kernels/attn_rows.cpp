// attn_rows: per-row cell lists flash attention (see attn_rows.h). Built with -ffp-contract=off:
// every fused multiply-add below is written out, as in the kernel whose rounding it keeps.
#include "attn_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LANNER_X86 1
#endif

namespace lanner {

namespace {

struct Params {
    float scale;    // applied to q.k (already divided by softcap when softcap > 0)
    float softcap;  // 0 = none
    int swa;        // 1 = skip each row's first `skip` cells
    int n_head_kv;
};

// Op parameters live for the process: a model has a handful of distinct ones.
const Params* intern_params(const Params& p) {
    static std::mutex mu;
    static std::deque<Params> all;
    std::lock_guard<std::mutex> lock(mu);
    for (const Params& q : all)
        if (q.scale == p.scale && q.softcap == p.softcap && q.swa == p.swa && q.n_head_kv == p.n_head_kv) return &q;
    all.push_back(p);
    return &all.back();
}

// ---- vector primitives, two builds of the same arithmetic --------------------------------------
// dot: 4 accumulators of 8 lanes over steps of 32 (fma of exact f16 products), reduced as
// (a0+a2)+(a1+a3), then lanes l_k+l_{k+4}, then (t0+t1)+(t2+t3). n % 32 == 0. The query side comes
// as f32 holding its f16 values (converted once per row, not per cell): the same products.

float dot_f16_scalar(const ggml_fp16_t* x, const float* y, int n) {
    float a[4][8] = {};
    for (int i = 0; i < n; i += 32)
        for (int j = 0; j < 4; ++j)
            for (int l = 0; l < 8; ++l) {
                const int e = i + 8 * j + l;
                a[j][l] = std::fma(ggml_fp16_to_fp32(x[e]), y[e], a[j][l]);
            }
    float x0[8], t[4];
    for (int l = 0; l < 8; ++l) x0[l] = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
    for (int l = 0; l < 4; ++l) t[l] = x0[l] + x0[l + 4];
    return (t[0] + t[1]) + (t[2] + t[3]);
}

void scale_f16_scalar(ggml_fp16_t* y, float v, int n) {
    for (int i = 0; i < n; ++i) y[i] = ggml_fp32_to_fp16(ggml_fp16_to_fp32(y[i]) * v);
}

void mad_f16_scalar(ggml_fp16_t* y, const ggml_fp16_t* x, float v, int n) {  // y = f16(x*v + y)
    for (int i = 0; i < n; ++i) y[i] = ggml_fp32_to_fp16(std::fma(ggml_fp16_to_fp32(x[i]), v, ggml_fp16_to_fp32(y[i])));
}

void round_f16_scalar(const float* x, float* y, int n) {
    for (int i = 0; i < n; ++i) y[i] = ggml_fp16_to_fp32(ggml_fp32_to_fp16(x[i]));
}

void out_f16_scalar(const ggml_fp16_t* a, float v, float* y, int n) {
    for (int i = 0; i < n; ++i) y[i] = ggml_fp16_to_fp32(a[i]) * v;
}

#ifdef LANNER_X86
__attribute__((target("avx2,fma,f16c"))) float dot_f16_avx2(const ggml_fp16_t* x, const float* y, int n) {
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int i = 0; i < n; i += 32)
        for (int j = 0; j < 4; ++j) {
            const __m256 vx = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(x + i + 8 * j)));
            a[j] = _mm256_fmadd_ps(vx, _mm256_loadu_ps(y + i + 8 * j), a[j]);
        }
    const __m256 x0 = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(x0), _mm256_extractf128_ps(x0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

__attribute__((target("avx2,fma,f16c"))) void scale_f16_avx2(ggml_fp16_t* y, float v, int n) {
    const __m256 vv = _mm256_set1_ps(v);
    for (int i = 0; i < n; i += 8) {
        const __m256 a = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(y + i))), vv);
        _mm_storeu_si128((__m128i*)(y + i), _mm256_cvtps_ph(a, 0));
    }
}

__attribute__((target("avx2,fma,f16c"))) void mad_f16_avx2(ggml_fp16_t* y, const ggml_fp16_t* x, float v, int n) {
    const __m256 vv = _mm256_set1_ps(v);
    for (int i = 0; i < n; i += 32) {  // 4 independent vectors per iteration
        __m256 r[4];
        for (int j = 0; j < 4; ++j) {
            const __m256 vx = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(x + i + 8 * j)));
            const __m256 vy = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(y + i + 8 * j)));
            r[j] = _mm256_fmadd_ps(vx, vv, vy);
        }
        for (int j = 0; j < 4; ++j) _mm_storeu_si128((__m128i*)(y + i + 8 * j), _mm256_cvtps_ph(r[j], 0));
    }
}

// AVX-512: 16 lanes hold two of the AVX2 build's 8-lane vectors side by side (dot: accumulators
// a0|a1 and a2|a3; (a0|a1) + (a2|a3) then low + high half is (a0+a2) + (a1+a3)), so every lane
// sees the same operations in the same order.
#define LANNER_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#pragma GCC diagnostic push  // GCC 12's AVX-512 headers: see mul_mat_q_avx512.h
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

LANNER_AVX512 float dot_f16_avx512(const ggml_fp16_t* x, const float* y, int n) {
    __m512 a01 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 32) {
        a01 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(x + i))), _mm512_loadu_ps(y + i), a01);
        a23 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(x + i + 16))), _mm512_loadu_ps(y + i + 16),
                              a23);
    }
    const __m512 s = _mm512_add_ps(a01, a23);
    const __m256 x0 = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(x0), _mm256_extractf128_ps(x0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

LANNER_AVX512 void scale_f16_avx512(ggml_fp16_t* y, float v, int n) {
    const __m512 vv = _mm512_set1_ps(v);
    for (int i = 0; i < n; i += 16) {
        const __m512 a = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(y + i))), vv);
        _mm256_storeu_si256((__m256i*)(y + i), _mm512_cvtps_ph(a, 0));
    }
}

LANNER_AVX512 void mad_f16_avx512(ggml_fp16_t* y, const ggml_fp16_t* x, float v, int n) {
    const __m512 vv = _mm512_set1_ps(v);
    for (int i = 0; i < n; i += 32) {
        const __m512 r0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(x + i))), vv,
                                          _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(y + i))));
        const __m512 r1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(x + i + 16))), vv,
                                          _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(y + i + 16))));
        _mm256_storeu_si256((__m256i*)(y + i), _mm512_cvtps_ph(r0, 0));
        _mm256_storeu_si256((__m256i*)(y + i + 16), _mm512_cvtps_ph(r1, 0));
    }
}
#pragma GCC diagnostic pop

// n % 8 == 0; F16C rounds to nearest even, as ggml's conversions
__attribute__((target("avx2,fma,f16c"))) void round_f16_avx2(const float* x, float* y, int n) {
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0)));
}

__attribute__((target("avx2,fma,f16c"))) void out_f16_avx2(const ggml_fp16_t* a, float v, float* y, int n) {
    const __m256 vv = _mm256_set1_ps(v);
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(a + i))), vv));
}

const bool k_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
const bool k_avx512 = k_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
const bool k_avx2 = false;
const bool k_avx512 = false;
#endif

constexpr int k_heads_max = 4;  // heads of one KV head attended together (attn_rows_unit.inc)

// One query row and head: its inputs and scratch (attn_rows_unit.inc).
struct Unit {
    const Params* p;
    const float* q;         // [hd_k]
    const char* k;          // the row's KV head in cell 0 of the K cache; cell c at k + c * k_stride
    size_t k_stride;
    const char* v;
    size_t v_stride;
    const int32_t* cells;   // visible cells: cells[j0 .. j1)
    int j0, j1, hd_k, hd_v;
    float* qf;              // [hd_k] scratch: the query's f16 values
    ggml_fp16_t* acc;       // [hd_v] scratch: the f16 accumulator
    float* out;             // [hd_v]
};

#define LANNER_UNIT_FN unit_scalar
#define LANNER_UNIT_TARGET
#define LANNER_DOT dot_f16_scalar
#define LANNER_SCALE scale_f16_scalar
#define LANNER_MAD mad_f16_scalar
#define LANNER_ROUND round_f16_scalar
#define LANNER_OUT out_f16_scalar
#include "attn_rows_unit.inc"

#ifdef LANNER_X86
#define LANNER_UNIT_FN unit_avx2
#define LANNER_UNIT_TARGET __attribute__((target("avx2,fma,f16c")))
#define LANNER_DOT dot_f16_avx2
#define LANNER_SCALE scale_f16_avx2
#define LANNER_MAD mad_f16_avx2
#define LANNER_ROUND round_f16_avx2
#define LANNER_OUT out_f16_avx2
#include "attn_rows_unit.inc"

#define LANNER_UNIT_FN unit_avx512
#define LANNER_UNIT_TARGET LANNER_AVX512
#define LANNER_DOT dot_f16_avx512
#define LANNER_SCALE scale_f16_avx512
#define LANNER_MAD mad_f16_avx512
#define LANNER_ROUND round_f16_avx2
#define LANNER_OUT out_f16_avx2
#pragma GCC diagnostic push  // GCC 12's AVX-512 headers: see mul_mat_q_avx512.h
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "attn_rows_unit.inc"
#pragma GCC diagnostic pop
#endif

// The widest build the CPU runs; LANNER_ATTN_ISA=avx2 or scalar picks a narrower one (read at
// each op call, for tests and comparisons).
using UnitFn = void (*)(const Unit* units, int nh);
UnitFn unit_fn() {
#ifdef LANNER_X86
    const char* e = std::getenv("LANNER_ATTN_ISA");
    const std::string want = e ? e : "";
    if (want == "scalar") return unit_scalar;
    if (k_avx512 && want != "avx2") return unit_avx512;
    if (k_avx2) return unit_avx2;
#endif
    return unit_scalar;
}

// ---- the op ------------------------------------------------------------------------------------

// dst [hd_v, n_head, T]; src: q [hd_k, n_head, T], k_cache, v_cache, cells, rows.
void attn_rows_compute(ggml_tensor* dst, int ith, int nth, void* userdata) {
    const Params& p = *(const Params*)userdata;
    const ggml_tensor *q = dst->src[0], *kc = dst->src[1], *vc = dst->src[2];
    const int32_t* cells = (const int32_t*)dst->src[3]->data;
    const int32_t* rows = (const int32_t*)dst->src[4]->data;
    const int hd_k = (int)q->ne[0], n_head = (int)q->ne[1], T = (int)q->ne[2], hd_v = (int)dst->ne[0];
    const int group = n_head / p.n_head_kv;
    const UnitFn attend = unit_fn();
    // Work units: (row, head) pairs. A prompt's later rows see more cells, so contiguous ranges
    // of rows would give the last thread most of the work: with rows enough, whole rows (their
    // heads share K/V reads) are dealt round-robin; else (a decode step) the pairs are.
    const int n_units = T * n_head;
    const bool by_row = T >= 2 * nth;
    const int first = by_row ? ith * n_head : ith, step = by_row ? nth * n_head : nth;
    // scratch per head of a group: the query rounded to f16 (as ggml does) held as f32, converted
    // once per row; the f16 accumulator
    std::vector<float> qf((size_t)k_heads_max * hd_k);
    std::vector<ggml_fp16_t> acc((size_t)k_heads_max * hd_v);
    Unit units[k_heads_max];
    auto unit = [&](int t, int h, int k) {  // row t, head h, scratch slot k
        const int g = h / group;
        const int32_t off = rows[3 * t], n = rows[3 * t + 1], skip = p.swa ? rows[3 * t + 2] : 0;
        units[k] = Unit{&p,
                        (const float*)((const char*)q->data + h * q->nb[1] + t * q->nb[2]),
                        (const char*)kc->data + (int64_t)g * hd_k * sizeof(ggml_fp16_t), kc->nb[1],
                        (const char*)vc->data + (int64_t)g * hd_v * sizeof(ggml_fp16_t), vc->nb[1],
                        cells, off + skip, off + n, hd_k, hd_v, qf.data() + (size_t)k * hd_k,
                        acc.data() + (size_t)k * hd_v,
                        (float*)((char*)dst->data + h * dst->nb[1] + t * dst->nb[2])};
    };
    for (int u0 = first; u0 < n_units; u0 += step) {
        if (!by_row) {  // one (row, head) pair
            unit(u0 / n_head, u0 % n_head, 0);
            attend(units, 1);
            continue;
        }
        const int t = u0 / n_head;  // a whole row: its heads by KV head, up to k_heads_max at once
        for (int h0 = 0; h0 < n_head; h0 += group)
            for (int c = h0; c < h0 + group; c += k_heads_max) {
                const int nh = std::min(k_heads_max, h0 + group - c);
                for (int k = 0; k < nh; ++k) unit(t, c + k, k);
                attend(units, nh);
            }
    }
}

}  // namespace

int64_t attn_rows_cap(int n_tokens, int n_kv, int n_seq_max) {
    return (int64_t)n_kv * std::max(1, std::min(n_tokens, n_seq_max));
}

ggml_tensor* attn_rows(ggml_context* ctx, ggml_tensor* q, ggml_tensor* k_cache, ggml_tensor* v_cache,
                       ggml_tensor* cells, ggml_tensor* rows, int n_head_kv, float scale, float softcap, bool swa) {
    const int64_t hd_v = v_cache->ne[0] / n_head_kv;
    Params p{softcap > 0.0f ? scale / softcap : scale, softcap > 0.0f ? softcap : 0.0f, swa ? 1 : 0, n_head_kv};
    ggml_tensor* args[5] = {q, k_cache, v_cache, cells, rows};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, hd_v, q->ne[1], q->ne[2], 1, args, 5, attn_rows_compute,
                          GGML_N_TASKS_MAX, (void*)intern_params(p));
}

}  // namespace lanner
