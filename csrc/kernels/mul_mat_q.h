// mul_mat_q: Y = W^T X for a quantized weight W, as a ggml CPU custom op that reads each weight
// block once for up to four columns of X and two rows of W (register tiles), where ggml's
// kernel reads it once per column. Each output element keeps the arithmetic of ggml's AVX2
// vec_dot for its type (block integer dot products in 8 int32 lanes, fused multiply-add of the
// float scale product into 8 float lanes in block order, ggml's horizontal sum; Q4_1 adds the
// min term by a scalar fused multiply-add chain, Q4_K its mins' term in 4 more float lanes, Q6_K
// subtracts its offset of 32 in the integer lanes),
// with X quantized by ggml's own from_float:
// results are bit-identical to ggml_mul_mat with this ggml, for any number of columns, so the op
// keeps batch invariance and the ggml-exact reference.
// Where the CPU has AVX-512 with VNNI, the multi-column tiles run two columns per 512-bit
// register: 4 rows x 8 columns for the 32-element types, 2 x 8 for the K-quants (same bits;
// LANNER_MM_Q_ISA=avx2 keeps AVX2).
// Scope: CPU with AVX2/FMA/F16C at run time; W in a host (not repacked) buffer, 2-D, contiguous
// rows of Q4_0, Q4_1, Q5_0, Q8_0 (2 rows x 4 columns per pass; a single column: 4 rows per pass,
// Q8_0 one, with software prefetching, see mul_mat_q.cpp) or Q4_K, Q6_K (1 x 4); X F32 2-D with contiguous
// rows.
#pragma once
#include "ggml.h"

namespace lanner {

// Whether the kernel covers weights of `type` with rows of K (the type, K a whole number of its blocks).
bool mul_mat_q_type_supported(ggml_type type, int64_t K);
// Whether mul_mat_q(ctx, w, x) is available (CPU features, types, layout, buffer).
bool mul_mat_q_supported(const ggml_tensor* w, const ggml_tensor* x);

// Whether a single column (a decode step) of weights of `type` is faster through the op than
// through ggml's vec_dot: Q4_0, Q4_1, Q5_0, Q8_0 (prefetching, see mul_mat_q.cpp); not the
// K-quants (one row per pass either way, not measured faster).
bool mul_mat_q_single_column_faster(ggml_type type);

// w: [K, N] quantized, x: F32 [K, M] -> F32 [N, M]
ggml_tensor* mul_mat_q(ggml_context* ctx, ggml_tensor* w, ggml_tensor* x);

// The kernel's builds: the scalar one writes the lane arithmetic out; avx512 (AVX-512 F/BW/DQ/VL
// + VNNI) runs the multi-column tiles two columns per register and is AVX2 elsewhere (single
// columns, an odd last column). All give the same bits. The op uses the widest one the CPU has.
enum class Isa { scalar, avx2, avx512 };
bool mul_mat_q_isa_available(Isa isa);

// The kernel on plain arrays, for tests and benchmarks: w_rows [N] rows of K/32 blocks of
// `type`, x [M][K] row-major floats -> y [M][N], by the build `isa`. Returns false for an
// unsupported type or K, or a build this CPU cannot run.
bool mul_mat_q_host(ggml_type type, const void* w, int64_t K, int64_t N, const float* x, int64_t M, float* y,
                    Isa isa);

// One multiply in a one-op ggml graph on the CPU (n_threads), through ggml_mul_mat (op = false)
// or the custom op (op = true), same arrays as mul_mat_q_host: the tests' and benches' reference.
bool mul_mat_graph(ggml_type type, const void* w, int64_t K, int64_t N, const float* x, int64_t M, float* y,
                   int n_threads, bool op);

}  // namespace lanner
