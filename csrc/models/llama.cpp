// Architecture `llama` (Llama 1/2/3-style, SmolLM2): RMSNorm, normal (adjacent-pair) RoPE —
// GGUF stores q/k rows permuted for it —, GQA, SwiGLU FFN, tied output when output.weight is absent.
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

void llama_load(Model& m) {
    auto& hp = m.hp;
    auto& f = *m.file;
    m.read_base_hparams(/*n_ctx_train=*/4096, /*rms_eps=*/1e-5f, /*rope_base=*/10000.0f);
    hp.n_embd_head_k = (int)f.get_int(m.key("attention.key_length"), hp.n_embd / hp.n_head);
    hp.n_embd_head_v = (int)f.get_int(m.key("attention.value_length"), hp.n_embd / hp.n_head);
    hp.n_rot = (int)f.get_int(m.key("rope.dimension_count"), hp.n_embd_head_k);
    hp.rope_mode = 0;  // GGML_ROPE_TYPE_NORMAL
    m.bind_common();
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        m.bind_attention(il, w);
        m.bind_ffn(il, w);
    }
}

ggml_tensor* llama_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const float scale = 1.0f / sqrtf((float)hp.n_embd_head_k);
    ggml_tensor* x = ggml_get_rows(ctx, b.m.tok_embd, b.in.tokens);  // [n_embd, T]
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        ggml_tensor* h = blk_rms_norm(b, x, w.attn_norm);
        ggml_tensor* q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, w.wq, h), hp.n_embd_head_k, hp.n_head, b.n_tokens);
        ggml_tensor* k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, w.wk, h), hp.n_embd_head_k, hp.n_head_kv, b.n_tokens);
        ggml_tensor* v = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, w.wv, h), hp.n_embd_head_v, hp.n_head_kv, b.n_tokens);
        q = blk_rope(b, q, hp.rope_base, hp.rope_freq_scale);
        k = blk_rope(b, k, hp.rope_base, hp.rope_freq_scale);
        ggml_tensor* a = blk_attention(b, il, q, k, v, scale, false);  // [n_head*hd_v, T]
        x = ggml_add(ctx, x, ggml_mul_mat(ctx, w.wo, a));
        h = blk_rms_norm(b, x, w.ffn_norm);
        x = ggml_add(ctx, x, blk_ffn(b, h, w, Glu::swiglu));
    }
    return blk_output(b, x);
}

}  // namespace lanner
