// Architecture `qwen2` (Qwen2, Qwen2.5): the llama block with biases on the q/k/v projections
// and NeoX RoPE (GGUF keeps HF's rotate-half layout); tied output when output.weight is absent.
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

void qwen2_load(Model& m) {
    auto& hp = m.hp;
    m.read_base_hparams(/*n_ctx_train=*/32768, /*rms_eps=*/1e-6f, /*rope_base=*/10000.0f);
    m.read_head_dims();
    hp.rope_mode = GGML_ROPE_TYPE_NEOX;
    m.bind_common();
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        m.bind_attention(il, w);
        m.bind_qkv_biases(il, w, /*required=*/false);
        m.bind_ffn(il, w);
    }
}

ggml_tensor* qwen2_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const float scale = 1.0f / sqrtf((float)hp.n_embd_head_k);
    ggml_tensor* x = blk_inp_embd(b);  // [n_embd, T]
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        Qkv a = blk_qkv(b, blk_rms_norm(b, x, w.attn_norm), w);
        ggml_tensor* q = blk_rope(b, a.q, hp.rope_base, hp.rope_freq_scale);
        ggml_tensor* k = blk_rope(b, a.k, hp.rope_base, hp.rope_freq_scale);
        ggml_tensor* o = blk_attention(b, il, q, k, a.v, scale, false);  // [n_head*hd_v, T]
        x = ggml_add(ctx, x, blk_mm(b, w.wo, o));
        ggml_tensor* h = blk_rms_norm(b, x, w.ffn_norm);
        x = ggml_add(ctx, x, blk_ffn(b, h, w, Glu::swiglu));
    }
    return blk_output(b, x);
}

}  // namespace lanner
