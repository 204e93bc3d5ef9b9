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

#include "mul_mat_q_avx2.h"
#include "mul_mat_q_avx512.h"
#include "mul_mat_q_blocks.h"
#include "mul_mat_q_scalar.h"

namespace lanner {

namespace {

using namespace mmq;  // the builds' tiles (mul_mat_q_*.h)

#ifdef LANNER_X86
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

    // isa: the build that will run (Isa::avx512 also lays out the column pairs)
    void fill(ggml_type w_type, const char* x, size_t x_stride, int64_t K, int64_t M, Isa isa) {
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
#ifdef LANNER_X86
            if (vt == GGML_TYPE_Q8_K && isa == Isa::avx512)  // ggml's is its scalar reference on x86
                quantize_q8k_avx512((const float*)(x + c * x_stride), (BlockQ8K*)qc, K);
            else
#endif
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
        y2.clear(), corr2.clear(), s_t.clear();
        m_cols = M;
        const bool k_quant = w_type == GGML_TYPE_Q4_K || w_type == GGML_TYPE_Q6_K;  // their tiles read columns as they are
        if (M >= 2 && isa == Isa::avx512 && !k_quant) pair(w_type, nb, M);
        if (M >= 2 && isa != Isa::scalar && vt == GGML_TYPE_Q8_1) {  // Q4_1: the sums by block, then
            s_t.assign((size_t)nb * M + 8, 0.0f);                      // column (+ slack for wide loads)
            for (int64_t c = 0; c < M; ++c)
                for (int ib = 0; ib < nb; ++ib) s_t[(size_t)ib * M + c] = s[c * nb + ib];
        }
    }

    // The AVX-512 tiles' inputs (Job::y2, corr2): columns 2p, 2p+1 side by side per block.
    std::vector<int8_t> y2;
    std::vector<int32_t> corr2;
    std::vector<float> s_t;  // Q4_1: s transposed (Job::as_t)
    int64_t m_cols = 0;

    void pair(ggml_type w_type, int nb, int64_t M) {
        const int64_t P = M / 2;
        const bool q8_1 = w_type == GGML_TYPE_Q4_1;  // its dot type: Q8_1 (d, s, qs); else Q8_0 (d, qs)
        const size_t blk = q8_1 ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0), qs_at = q8_1 ? 4 : 2;
        const int offset = u8_offset(w_type);
        y2.resize((size_t)P * nb * 64);
        corr2.resize(offset ? (size_t)P * nb * 16 : 0);  // Q4_1 (offset 0) starts its sums from 0
        for (int64_t p = 0; p < P; ++p)
            for (int ib = 0; ib < nb; ++ib) {
                const size_t k = (size_t)p * nb + ib;
                for (int h = 0; h < 2; ++h) {
                    const int64_t c = 2 * p + h;
                    const int8_t* qs = (const int8_t*)(q.data() + c * row_bytes + ib * blk + qs_at);
                    std::memcpy(&y2[64 * k + 32 * h], qs, 32);
                    if (offset)
                        for (int l = 0; l < 8; ++l)
                            corr2[16 * k + 8 * h + l] = -offset * (qs[4 * l] + qs[4 * l + 1] + qs[4 * l + 2] + qs[4 * l + 3]);
                }
            }
    }

    // Each thread keeps its scratch between ops (no allocation per decode step) up to this size;
    // past it (a long prompt through a wide matrix: ~3 x M x K bytes) it is freed after the op.
    static constexpr size_t k_keep_bytes = size_t(8) << 20;
    void trim() {
        const size_t held = q.capacity() + (d.capacity() + s.capacity() + s_t.capacity()) * sizeof(float) +
                            y2.capacity() + corr2.capacity() * sizeof(int32_t);
        if (held > k_keep_bytes) *this = QuantizedX();
    }

    void attach(Job& j) const {
        if (!s_t.empty()) j.as_t = s_t.data(), j.as_t_stride = (size_t)m_cols;
        if (y2.empty()) return;
        j.y2 = y2.data(), j.corr2 = corr2.data();
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
    qx.fill(w->type, (const char*)x->data, x->nb[1], K, M, best_isa());
    Job j{(const char*)w->data, w->nb[1], (int)(K / ggml_blck_size(w->type)), (const char*)qx.q.data(), qx.row_bytes,
          qx.d.data(), qx.s.data(), (float*)dst->data, dst->nb[1] / sizeof(float)};
    qx.attach(j);
    run_type(w->type, j, (int)r_begin, (int)r_end, (int)M, best_isa());
    qx.trim();
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
    qx.fill(type, (const char*)x, K * sizeof(float), K, M, isa);
    Job j{(const char*)w, ggml_row_size(type, K), (int)(K / ggml_blck_size(type)), (const char*)qx.q.data(), qx.row_bytes,
          qx.d.data(), qx.s.data(), y, (size_t)N};
    qx.attach(j);
    run_type(type, j, 0, (int)N, (int)M, isa);
    return true;
}

}  // namespace lanner
