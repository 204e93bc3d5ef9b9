// Graph blocks shared by every architecture: inputs of one ubatch, RMSNorm, RoPE, attention
// over the KV cache (writes this ubatch's K/V into its cells, then attention under a causal +
// per-sequence (+ sliding-window) mask: flash attention, or softmax(KQ)V with a transposed V
// cache), gated FFN, output head.
// models/<arch>.cpp compose these; nothing here knows an architecture's name.
#pragma once
#include "ggml.h"
#include "kv_cache.h"
#include "model.h"

namespace lanner {

struct GraphInputs {
    ggml_tensor* tokens = nullptr;    // I32 [n_tokens]
    ggml_tensor* pos = nullptr;       // I32 [n_tokens]
    ggml_tensor* kv_idxs = nullptr;   // I64 [n_tokens]: cell each token's K/V is written to
    ggml_tensor* v_idxs = nullptr;    // I64 [n_embd_v_gqa*n_tokens]: element index in a transposed V
    ggml_tensor* mask = nullptr;      // F16 [n_kv, n_tokens]: 0 = visible, -inf = hidden
    ggml_tensor* mask_swa = nullptr;  // F16 [n_kv, n_tokens], sliding-window layers (or null)
    ggml_tensor* out_ids = nullptr;   // I32 [n_outputs]: rows whose logits are wanted
};

struct GraphBuild {
    ggml_context* ctx;
    ggml_cgraph* gf;
    const Model& m;
    KvCache& kv;
    GraphInputs in;
    int n_tokens;   // tokens in this ubatch
    int n_kv;       // cells visited by attention: [0, n_kv)
    int n_outputs;  // rows of logits produced
};

enum class Glu { swiglu, geglu };

ggml_tensor* blk_rms_norm(GraphBuild& b, ggml_tensor* x, ggml_tensor* w);  // x: [n, ...]
ggml_tensor* blk_rope(GraphBuild& b, ggml_tensor* x, float base, float freq_scale);  // [hd, n_h, T]
// q: [hd_k, n_head, T], k: [hd_k, n_head_kv, T], v: [hd_v, n_head_kv, T] -> [hd_v*n_head, T]
ggml_tensor* blk_attention(GraphBuild& b, int il, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v,
                           float scale, bool swa);
ggml_tensor* blk_ffn(GraphBuild& b, ggml_tensor* x, const LayerWeights& w, Glu glu);  // [n_embd, T]
ggml_tensor* blk_output(GraphBuild& b, ggml_tensor* x);  // [n_embd, T] -> [n_vocab, n_outputs]

}  // namespace lanner
