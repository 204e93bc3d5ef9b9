// mul_mat_graph: one weight x columns multiply through a one-op ggml graph on the CPU, by
// ggml_mul_mat or by lanner's mul_mat_q op (see mul_mat_q.h): what the kernel tests compare.
#include <cstring>

#include "ggml-cpu.h"
#include "mul_mat_q.h"

namespace lanner {

bool mul_mat_graph(ggml_type type, const void* w, int64_t K, int64_t N, const float* x, int64_t M, float* y,
                   int n_threads, bool op) {
    if (op && !mul_mat_q_type_supported(type, K)) return false;  // the op would leave Y unwritten
    const size_t w_bytes = ggml_row_size(type, K) * N;
    const size_t mem = w_bytes + sizeof(float) * (size_t)(K * M + N * M) + 64 * ggml_tensor_overhead() +
                       ggml_graph_overhead() + ggml_row_size(GGML_TYPE_Q8_1, K) * M + (1 << 20);
    ggml_init_params ip{mem, nullptr, false};
    ggml_context* ctx = ggml_init(ip);
    if (!ctx) return false;
    ggml_tensor* tw = ggml_new_tensor_2d(ctx, type, K, N);   // [K, N]
    ggml_tensor* tx = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, M);  // [K, M]
    std::memcpy(tw->data, w, w_bytes);
    std::memcpy(tx->data, x, sizeof(float) * K * M);
    ggml_tensor* out = op ? mul_mat_q(ctx, tw, tx) : ggml_mul_mat(ctx, tw, tx);  // [N, M]
    ggml_cgraph* gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    const bool ok = ggml_graph_compute_with_ctx(ctx, gf, n_threads) == GGML_STATUS_SUCCESS;
    if (ok) std::memcpy(y, out->data, sizeof(float) * N * M);
    ggml_free(ctx);
    return ok;
}

}  // namespace lanner
