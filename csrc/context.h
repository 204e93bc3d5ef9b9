// Context: decodes batches of many sequences against one KV cache.
// Owns the backends (best device from ggml's registry + CPU), the scheduler, the KV cache and
// the logits buffer. decode() splits a batch into ubatches of at most n_batch tokens, places
// each ubatch's tokens in free cells, builds the architecture's graph and runs it; rows of
// logits come back only for entries that asked. Not thread-safe: one thread drives a Context.
#pragma once
#include <memory>
#include <vector>

#include "batch.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "graph.h"
#include "kv_cache.h"
#include "model.h"

namespace lanner {

struct ContextParams {
    int n_ctx = 4096;    // KV cells (tokens over all sequences)
    int n_batch = 512;   // max tokens per graph evaluation (ubatch)
    int n_seq_max = 16;  // sequence ids 0..n_seq_max-1 (<= 64)
    int n_threads = 0;   // 0 = hardware concurrency
    // KV cell types; f16 by default. f32 is available: ggml's CPU flash attention rounds Q to
    // f16 for an f16 K and accumulates softmax(QK)V in f16 for an f16 V, which costs a little
    // accuracy against the float reference (SmolLM2, 70 random tokens: min logit cosine 0.99897
    // f16 vs 0.99983 f32), but f32 doubles the bytes each decode step reads from the cache.
    ggml_type type_k = GGML_TYPE_F16;
    ggml_type type_v = GGML_TYPE_F16;
    // Flash attention (ggml_flash_attn_ext, default) or softmax(KQ)V over a transposed V cache.
    // The softmax(KQ)V path sums over cells with SIMD, so its rounding depends on cell alignment
    // (logits move by up to ~1 on SmolLM2, near-ties can flip), but on this ggml's CPU backend
    // it decodes ~15% faster at 512 cells.
    int flash_attn = 1;
    // Batch invariance (CPU, with flash attention): every row of attention runs ggml's one-key-
    // at-a-time kernel, which visits a sequence's cells in cell order (= position order, see
    // kv_cache.h) and skips masked ones, so a sequence's logits are the same bit for bit
    // whatever shares its ubatch, how its prompt was chunked, where its cells lie and how many
    // cells exist. Off, ggml picks by shape: a tiled kernel for ubatches of >= 64 tokens and a
    // KV-split one for a single token over >= 512 cells, each rounding differently. It sets the
    // CPU backend's reference mode (ggml_backend_cpu_set_use_ref), which also turns off ggml's
    // RMSNorm+mul fusion. Costs: bench/README.md.
    int batch_invariant = 1;
};

class Context {
  public:
    Context(std::shared_ptr<Model> model, const ContextParams& p);
    ~Context();
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    // Decode every entry; returns the number of logits rows (entries with want=1).
    // Throws std::invalid_argument for bad entries and KvCacheFullError when fewer cells are
    // free than entries; in both cases nothing was applied.
    int decode(const Batch& b);
    const float* logits() const { return logits_.data(); }  // [n_out, n_vocab], valid until next decode

    KvCache& kv() { return *kv_; }
    const Model& model() const { return *model_; }
    const ContextParams& params() const { return params_; }
    int n_threads() const { return n_threads_; }
    void set_n_threads(int n);
    const char* device_name() const;
    bool use_flash_attn() const;
    bool use_attn_rows() const { return use_attn_rows_; }  // kernels/attn_rows.h in use
    bool use_mm_q() const { return use_mm_q_; }  // kernels/mul_mat_q.h allowed for weights
    int last_n_mm_q() const { return last_n_mm_q_; }  // matmuls through it in the last graph built

  private:
    std::shared_ptr<Model> model_;
    ContextParams params_;
    std::unique_ptr<KvCache> kv_;
    ggml_backend_t backend_ = nullptr;      // the model's device
    ggml_backend_t backend_cpu_ = nullptr;  // == backend_ when the device is the CPU
    ggml_backend_sched_t sched_ = nullptr;
    ggml_threadpool_t threadpool_ = nullptr;  // persistent CPU workers (else ggml spawns per graph)
    size_t graph_size_ = 0;                 // max nodes
    std::vector<uint8_t> graph_meta_;       // ggml context memory for graph metadata
    std::vector<float> logits_;             // [n_out, n_vocab]
    int n_threads_ = 1;

    // ubatch scratch: input values set after allocation
    std::vector<int64_t> idx_;       // [T] cell of each token
    std::vector<int64_t> v_idx_;     // [n_embd_v_gqa*T] element of a transposed V
    std::vector<int32_t> out_ids_;   // [n_out] rows of this ubatch wanting logits
    std::vector<ggml_fp16_t> mask_;  // [T, n_kv]
    std::vector<ggml_fp16_t> mask_swa_;
    int last_n_mm_q_ = 0;
    bool mm_q_gemm_only_ = false;  // LANNER_MM_Q=gemm: single columns stay on ggml_mul_mat
    bool use_mm_q_ = false;       // weights' matmuls through kernels/mul_mat_q.h where it applies
    bool use_attn_rows_ = false;  // attention over per-row cell lists instead of masked n_kv cells
    std::vector<int32_t> attn_cells_;  // [attn_rows_cap] lists of the ubatch's sequences
    std::vector<int32_t> attn_rows_;   // [3*T] off, n, skip per row

    struct Built {
        ggml_context* ctx;  // graph metadata; freed by the caller
        ggml_cgraph* gf;
        GraphInputs in;
        ggml_tensor* logits;  // [n_vocab, n_outputs] (null when n_outputs == 0)
    };
    Built build_graph(int n_tokens, int n_kv, int n_outputs, int n_embd_rows = 0);

    // The last ubatch's graph, kept allocated: a ubatch of the same shape (typical for decode
    // steps, since n_kv is padded) only refills the inputs and runs it again.
    Built graph_{};
    int graph_shape_[3] = {-1, -1, -1};  // n_tokens, n_kv, n_outputs of graph_
    int graph_embd_rows_ = -1;           // embedding rows of graph_
    std::vector<int32_t> tokens_;        // [T] this ubatch's ids, embedding entries as 0
    std::vector<int64_t> embd_idx_;      // [n_embd_rows] entry of each embedding row in the ubatch
    // batch -> ubatch ends: at most n_batch entries, never splitting an attn_end block
    std::vector<int> ubatch_ends(const Batch& b) const;
    void drop_graph();
    void fill_masks(const Batch& b, int i0, int n_tokens, int n_kv);
    void fill_attn_rows(const Batch& b, int i0, int n_tokens, int n_kv);
    void decode_ubatch(const Batch& b, int i0, int n_tokens, int out_row0);
};

}  // namespace lanner
