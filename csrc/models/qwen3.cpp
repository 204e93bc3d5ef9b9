// Architecture `qwen3` (dense Qwen3): the qwen2 block without (but tolerating) q/k/v biases and
// with a per-head RMSNorm on q and k (attn_q_norm / attn_k_norm, over head_dim) before NeoX RoPE.
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

// Shared by qwen3 and qwen3moe: hparams, embeddings, attention with q/k norms.
void qwen3_load_attention(Model& m) {
    auto& hp = m.hp;
    m.read_base_hparams(/*n_ctx_train=*/40960, /*rms_eps=*/1e-6f, /*rope_base=*/10000.0f);
    m.read_head_dims();
    hp.rope_mode = GGML_ROPE_TYPE_NEOX;
    m.bind_common();
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        const std::string p = "blk." + std::to_string(il) + ".";
        m.bind_attention(il, w);
        m.bind_qkv_biases(il, w, /*required=*/false);
        w.q_norm = m.need(p + "attn_q_norm.weight", {hp.n_embd_head_k});
        w.k_norm = m.need(p + "attn_k_norm.weight", {hp.n_embd_head_k});
    }
}

// x: [n_embd, T] -> x + attention(norm(x)) for layer il
ggml_tensor* qwen3_attention(GraphBuild& b, int il, ggml_tensor* x) {
    const auto& hp = b.m.hp;
    const auto& w = b.m.layers[il];
    Qkv a = blk_qkv(b, blk_rms_norm(b, x, w.attn_norm), w);
    ggml_tensor* q = blk_rope(b, blk_rms_norm(b, a.q, w.q_norm), hp.rope_base, hp.rope_freq_scale);
    ggml_tensor* k = blk_rope(b, blk_rms_norm(b, a.k, w.k_norm), hp.rope_base, hp.rope_freq_scale);
    ggml_tensor* o = blk_attention(b, il, q, k, a.v, 1.0f / sqrtf((float)hp.n_embd_head_k), false);
    return ggml_add(b.ctx, x, blk_mm(b, w.wo, o));
}

void qwen3_load(Model& m) {
    qwen3_load_attention(m);
    for (int il = 0; il < m.hp.n_layer; ++il) m.bind_ffn(il, m.layers[il]);
}

ggml_tensor* qwen3_build(GraphBuild& b) {
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = blk_inp_embd(b);  // [n_embd, T]
    for (int il = 0; il < b.m.hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        x = qwen3_attention(b, il, x);
        x = ggml_add(ctx, x, blk_ffn(b, blk_rms_norm(b, x, w.ffn_norm), w, Glu::swiglu));
    }
    return blk_output(b, x);
}

}  // namespace lanner
