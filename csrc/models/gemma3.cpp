// Architecture `gemma3`: embeddings scaled by sqrt(n_embd); per-head RMS norms on q and k;
// post-attention and post-FFN norms; GeGLU (tanh GELU) FFN; NeoX RoPE; sliding-window
// (local) layers interleaved with global ones (every 6th layer global), local RoPE base
// 10000, global base/scaling from the file; attention scale 1/sqrt(key_length); tied output.
// GGUF norm weights already carry Gemma's (1 + w) offset.
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

void gemma3_load(Model& m) {
    auto& hp = m.hp;
    auto& f = *m.file;
    m.read_base_hparams(/*n_ctx_train=*/8192, /*rms_eps=*/1e-6f, /*rope_base=*/1000000.0f);
    hp.rope_base_swa = (float)f.get_float(m.key("rope.freq_base_swa"), 10000.0);
    hp.n_embd_head_k = (int)f.get_int(m.key("attention.key_length"), hp.n_embd / hp.n_head);
    hp.n_embd_head_v = (int)f.get_int(m.key("attention.value_length"), hp.n_embd_head_k);
    hp.n_rot = hp.n_embd_head_k;
    hp.rope_mode = GGML_ROPE_TYPE_NEOX;
    hp.n_swa = (int)f.get_int(m.key("attention.sliding_window"), 0);
    hp.layer_is_swa.assign(hp.n_layer, 0);
    if (hp.n_swa > 0)
        for (int il = 0; il < hp.n_layer; ++il) hp.layer_is_swa[il] = (il + 1) % 6 != 0;
    hp.attn_scale = 1.0f / sqrtf((float)hp.n_embd_head_k);

    m.bind_common();
    const int64_t hd = hp.n_embd_head_k;
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        const std::string p = "blk." + std::to_string(il) + ".";
        m.bind_attention(il, w);
        m.bind_ffn(il, w);
        w.q_norm = m.need(p + "attn_q_norm.weight", {hd});
        w.k_norm = m.need(p + "attn_k_norm.weight", {hd});
        w.post_attn_norm = m.need(p + "post_attention_norm.weight", {hp.n_embd});
        w.post_ffn_norm = m.need(p + "post_ffw_norm.weight", {hp.n_embd});
    }
}

ggml_tensor* gemma3_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = blk_inp_embd(b, sqrtf((float)hp.n_embd));  // [n_embd, T]; image rows unscaled
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        const bool swa = hp.layer_is_swa[il];
        const float base = swa ? hp.rope_base_swa : hp.rope_base;
        const float fscale = swa ? 1.0f : hp.rope_freq_scale;
        ggml_tensor* h = blk_rms_norm(b, x, w.attn_norm);
        ggml_tensor* q = ggml_reshape_3d(ctx, blk_mm(b, w.wq, h), hp.n_embd_head_k, hp.n_head, b.n_tokens);
        ggml_tensor* k = ggml_reshape_3d(ctx, blk_mm(b, w.wk, h), hp.n_embd_head_k, hp.n_head_kv, b.n_tokens);
        ggml_tensor* v = ggml_reshape_3d(ctx, blk_mm(b, w.wv, h), hp.n_embd_head_v, hp.n_head_kv, b.n_tokens);
        q = blk_rope(b, blk_rms_norm(b, q, w.q_norm), base, fscale);
        k = blk_rope(b, blk_rms_norm(b, k, w.k_norm), base, fscale);
        ggml_tensor* a = blk_attention(b, il, q, k, v, hp.attn_scale, swa);  // [n_head*hd_v, T]
        a = blk_rms_norm(b, blk_mm(b, w.wo, a), w.post_attn_norm);
        x = ggml_add(ctx, x, a);
        h = blk_rms_norm(b, x, w.ffn_norm);
        h = blk_rms_norm(b, blk_ffn(b, h, w, Glu::geglu), w.post_ffn_norm);
        x = ggml_add(ctx, x, h);
    }
    return blk_output(b, x);
}

}  // namespace lanner
