// Graph blocks shared by every architecture: inputs of one ubatch, RMSNorm, RoPE (with optional
// frequency factors), Q/K/V projections (separate or fused), attention over the KV cache (writes
// this ubatch's K/V into its cells, then attention under a causal + per-sequence (+ sliding-window)
// mask, scores soft-capped when the model says so: flash attention, or softmax(KQ)V with a
// transposed V cache), gated FFN (separate or fused gate/up), output head (+ final soft-cap).
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
    ggml_tensor* embd = nullptr;      // F32 [n_embd, n_embd_rows]: rows given in place of tokens (or null)
    ggml_tensor* embd_idx = nullptr;  // I64 [n_embd_rows]: the ubatch entry each row goes to
    // per-row cell lists (kernels/attn_rows.h), set when the context attends that way (then the
    // masks are unused): I32 [cap] cells of the ubatch's sequences, I32 [3*n_tokens] off, n, skip
    ggml_tensor* attn_cells = nullptr;
    ggml_tensor* attn_rows = nullptr;
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
    bool mm_q = false;  // weights' matmuls through kernels/mul_mat_q.h where it applies
    bool mm_q_gemm_only = false;  // ... but not single columns (LANNER_MM_Q=gemm, for comparison)
    int n_mm_q = 0;     // how many blk_mm calls took that op
};

enum class Glu { swiglu, geglu };

struct Qkv {
    ggml_tensor* q;  // [hd_k, n_head, T]
    ggml_tensor* k;  // [hd_k, n_head_kv, T]
    ggml_tensor* v;  // [hd_v, n_head_kv, T]
};

ggml_tensor* blk_rms_norm(GraphBuild& b, ggml_tensor* x, ggml_tensor* w);  // x: [n, ...]
// A weight times activations: w [K, N], x [K, T] -> [N, T]; lanner's register-tiled kernel
// (kernels/mul_mat_q.h, same bits as ggml's) when b.mm_q and it supports w and x (with
// b.mm_q_gemm_only only for T > 1), else ggml_mul_mat.
ggml_tensor* blk_mm(GraphBuild& b, ggml_tensor* w, ggml_tensor* x);
// The ubatch's input rows (graph_embd.cpp): token embeddings times `scale` (Gemma's sqrt(n_embd)),
// with the batch's embedding rows (images) put in place, unscaled. -> [n_embd, T]
ggml_tensor* blk_inp_embd(GraphBuild& b, float scale = 1.0f);
// x: [hd, n_h, T]. factors: [n_rot/2] F32 or null; pair i turns by pos*freq_scale*theta_i/factors[i];
// cos/sin are multiplied by hp.rope_attn_factor; YaRN when hp.rope_ext_factor != 0.
ggml_tensor* blk_rope(GraphBuild& b, ggml_tensor* x, float base, float freq_scale,
                      ggml_tensor* factors = nullptr);
// The model's RoPE factors for this context: rope_freqs if present, else LongRoPE's long factors
// when the context (KV cells) exceeds rope.scaling.original_context_length, else the short ones.
ggml_tensor* blk_rope_factors(const GraphBuild& b);
// h: [n_embd, T] (normed) -> q/k/v from attn_q/k/v (+ their biases where the layer has them),
// or split from the fused attn_qkv output.
Qkv blk_qkv(GraphBuild& b, ggml_tensor* h, const LayerWeights& w);
// q: [hd_k, n_head, T], k: [hd_k, n_head_kv, T], v: [hd_v, n_head_kv, T] -> [hd_v*n_head, T]
// Scores are scale * q.k, soft-capped by hp.attn_softcap when > 0.
// sinks: optional F32 [n_head], one extra logit per head in the softmax's denominator (gpt-oss)
ggml_tensor* blk_attention(GraphBuild& b, int il, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v,
                           float scale, bool swa, ggml_tensor* sinks = nullptr);
// Gated FFN: glu(gate(x)) * up(x), or with ffn_gate null, ffn_up's output split in halves
// (gate rows first, then up rows), then down. -> [n_embd, T]
ggml_tensor* blk_ffn(GraphBuild& b, ggml_tensor* x, const LayerWeights& w, Glu glu);
ggml_tensor* blk_softcap(GraphBuild& b, ggml_tensor* x, float cap);  // cap * tanh(x / cap)
// [n_embd, T] -> [n_vocab, n_outputs]; soft-capped by hp.final_softcap when > 0
ggml_tensor* blk_output(GraphBuild& b, ggml_tensor* x);

// Mixture of experts (graph_moe.cpp). Router logits r = W_r x (+ b_r).
//   softmax:        p = softmax(r) over all experts; top-k of p; weights p[top-k] (renormalised
//                   to sum 1 when hp.expert_weights_norm)            (qwen3moe)
//   softmax_topk:   top-k of r; weights softmax(r[top-k])            (gpt-oss)
// Each chosen expert's gated FFN (+ expert biases) through ggml_mul_mat_id, summed with weights.
enum class MoeGating { softmax, softmax_topk };
enum class MoeGlu { swiglu, swiglu_oai };  // swiglu_oai: gpt-oss' clamped SwiGLU (alpha 1.702, limit 7)
ggml_tensor* blk_moe(GraphBuild& b, ggml_tensor* x, const LayerWeights& w, MoeGating gating, MoeGlu glu);  // [n_embd, T]

}  // namespace lanner
