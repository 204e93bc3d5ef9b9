// attn_rows: flash attention over each query row's own list of KV cells (a ggml CPU custom op).
// Row t of a ubatch attends to cells[off_t + skip_t .. off_t + n_t) (skip_t only on sliding-
// window layers), in list order = cell order = position order (kv_cache.h), so a step costs the
// sum of each row's visible cells instead of rows x n_kv masked ones. The arithmetic is that of
// ggml's one-key-at-a-time CPU kernel (f16 Q.K dot, libm expf, f16 V accumulator): results are
// bit-identical to ggml_flash_attn_ext in reference mode with the equivalent 0/-inf mask.
// Builds: scalar, AVX2, AVX-512 (two AVX2 vectors per register, same bits); the widest the CPU
// runs, LANNER_ATTN_ISA=avx2|scalar for a narrower one.
// Scope: CPU, f16 K/V cache (not transposed), head dims a multiple of 32, no sinks, no ALiBi.
#pragma once
#include <cstdint>
#include <vector>

#include "ggml.h"

namespace lanner {

// Per-ubatch input of the op, filled on the host: the lists of the ubatch's sequences back to
// back, and per row (off, n, skip) into them.
struct AttnRowsInput {
    std::vector<int32_t> cells;  // [cap] cell indices; cap = attn_rows_cap(n_tokens, n_kv, n_seq_max)
    std::vector<int32_t> rows;   // [3 * n_tokens]: off, n (visible cells), skip (SWA: first n entries hidden)
};

int64_t attn_rows_cap(int n_tokens, int n_kv, int n_seq_max);

// q: F32 [hd_k, n_head, T]; k_cache: F16 [hd_k*n_head_kv, n_ctx]; v_cache: F16 [hd_v*n_head_kv, n_ctx];
// cells: I32 [cap]; rows: I32 [3*T]. Scores: scale*q.k, or softcap*tanh(scale/softcap*q.k).
// -> F32 [hd_v, n_head, T]
ggml_tensor* attn_rows(ggml_context* ctx, ggml_tensor* q, ggml_tensor* k_cache, ggml_tensor* v_cache,
                       ggml_tensor* cells, ggml_tensor* rows, int n_head_kv, float scale, float softcap, bool swa);

}  // namespace lanner
