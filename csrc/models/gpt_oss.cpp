// Architecture `gpt-oss` (OpenAI gpt-oss-20b/120b): pre-norm block; attention with q/k/v/o
// biases, NeoX RoPE with YaRN scaling (rope.scaling.*), one learned sink logit per head
// (attn_sinks) and sliding-window layers alternating with full ones (even layers sliding
// unless attention.sliding_window_pattern says otherwise); the FFN (after post_attention_norm)
// is a mixture of experts with biases: top-k of the router logits, softmax over those k,
// clamped SwiGLU (alpha 1.702, limit 7). Untied output.
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

void gpt_oss_load(Model& m) {
    auto& hp = m.hp;
    auto& f = *m.file;
    m.read_base_hparams(/*n_ctx_train=*/131072, /*rms_eps=*/1e-5f, /*rope_base=*/150000.0f);
    m.read_head_dims();
    if (hp.n_rot != hp.n_embd_head_k || hp.n_embd_head_v != hp.n_embd_head_k)
        f.fail("bad hyperparameters: gpt-oss needs rope.dimension_count == key_length == value_length");
    hp.rope_mode = GGML_ROPE_TYPE_NEOX;
    hp.rope_base_swa = (float)f.get_float(m.key("rope.freq_base_swa"), hp.rope_base);
    hp.rope_freq_scale_swa = hp.rope_freq_scale;
    hp.attn_scale = 1.0f / sqrtf((float)hp.n_rot);
    hp.n_swa = (int)f.get_int(m.key("attention.sliding_window"));
    if (hp.n_swa <= 0) f.fail("bad hyperparameters: attention.sliding_window = " + std::to_string(hp.n_swa));
    const int pattern = (int)f.get_int(m.key("attention.sliding_window_pattern"), 2);
    hp.layer_is_swa.assign(hp.n_layer, 0);
    for (int il = 0; il < hp.n_layer; ++il) hp.layer_is_swa[il] = pattern == 0 || il % pattern < pattern - 1;
    m.read_moe_hparams();

    m.bind_common();
    m.output = m.need("output.weight", {hp.n_embd, hp.n_vocab});
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        const std::string p = "blk." + std::to_string(il) + ".";
        m.bind_attention(il, w);
        m.bind_qkv_biases(il, w, /*required=*/false);
        w.bo = m.need(p + "attn_output.bias", {hp.n_embd});
        w.attn_sinks = m.need(p + "attn_sinks.weight", {hp.n_head});
        if (w.attn_sinks->type != GGML_TYPE_F32) f.fail("tensor '" + p + "attn_sinks.weight' must be F32");
        w.post_attn_norm = m.need(p + "post_attention_norm.weight", {hp.n_embd});
        m.bind_moe(il, w, /*biases=*/true);
    }
}

ggml_tensor* gpt_oss_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = blk_inp_embd(b);  // [n_embd, T]
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        const bool swa = hp.layer_is_swa[il];
        const float base = swa ? hp.rope_base_swa : hp.rope_base;
        const float fscale = swa ? hp.rope_freq_scale_swa : hp.rope_freq_scale;
        Qkv a = blk_qkv(b, blk_rms_norm(b, x, w.attn_norm), w);
        ggml_tensor* q = blk_rope(b, a.q, base, fscale);
        ggml_tensor* k = blk_rope(b, a.k, base, fscale);
        ggml_tensor* o = blk_attention(b, il, q, k, a.v, hp.attn_scale, swa, w.attn_sinks);  // [n_head*hd, T]
        x = ggml_add(ctx, x, ggml_add(ctx, blk_mm(b, w.wo, o), w.bo));
        ggml_tensor* h = blk_rms_norm(b, x, w.post_attn_norm);
        x = ggml_add(ctx, x, blk_moe(b, h, w, MoeGating::softmax_topk, MoeGlu::swiglu_oai));
    }
    return blk_output(b, x);
}

}  // namespace lanner
