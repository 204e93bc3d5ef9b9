// Architecture `phi3` (Phi-3, Phi-3.5, Phi-4-mini): RMSNorm, NeoX RoPE, fused `attn_qkv` (q, k, v
// rows) or separate q/k/v, fused gate/up FFN (`ffn_up` = [gate; up], SwiGLU), untied output.
// LongRoPE ("su") scaling: `rope_factors_long` / `rope_factors_short` [n_rot/2] divide the
// angles (long when the context exceeds rope.scaling.original_context_length, as llama.cpp
// chooses), cos/sin times rope.scaling.attn_factor. A declared sliding window is ignored, as in
// llama.cpp (Phi-3's GGUFs carry one its attention does not need within the trained context).
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

void phi3_load(Model& m) {
    auto& hp = m.hp;
    auto& f = *m.file;
    m.read_base_hparams(/*n_ctx_train=*/4096, /*rms_eps=*/1e-5f, /*rope_base=*/10000.0f);
    hp.n_embd_head_k = hp.n_embd / hp.n_head;
    hp.n_embd_head_v = hp.n_embd_head_k;
    hp.n_rot = (int)f.get_int(m.key("rope.dimension_count"), hp.n_embd_head_k);
    hp.rope_mode = GGML_ROPE_TYPE_NEOX;
    if (!(hp.rope_attn_factor > 0.0f && std::isfinite(hp.rope_attn_factor)))
        f.fail("bad hyperparameters: rope.scaling.attn_factor = " + std::to_string(hp.rope_attn_factor));
    if (hp.n_ctx_orig <= 0) f.fail("bad hyperparameters: rope.scaling.original_context_length <= 0");

    m.bind_common();
    const int64_t n_qkv = (int64_t)hp.n_embd + 2 * (int64_t)hp.n_embd_k_gqa();
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        const std::string p = "blk." + std::to_string(il) + ".";
        w.wqkv = m.opt(p + "attn_qkv.weight", {hp.n_embd, n_qkv});
        if (w.wqkv) {
            if (hp.n_rot <= 0 || hp.n_rot > hp.n_embd_head_k || hp.n_rot % 2)
                f.fail("bad hyperparameters: rope.dimension_count = " + std::to_string(hp.n_rot));
            w.attn_norm = m.need(p + "attn_norm.weight", {hp.n_embd});
            w.wo = m.need(p + "attn_output.weight", {hp.n_embd, hp.n_embd});
        } else {
            m.bind_attention(il, w);  // separate attn_q/k/v
        }
        w.ffn_norm = m.need(p + "ffn_norm.weight", {hp.n_embd});
        w.ffn_up = m.need(p + "ffn_up.weight", {hp.n_embd, 2 * (int64_t)hp.n_ff});
        w.ffn_down = m.need(p + "ffn_down.weight", {hp.n_ff, hp.n_embd});
    }
    m.bind_rope_factors();
    if (m.rope_freqs) f.fail("tensor 'rope_freqs.weight' is not used by phi3 (it has rope_factors_long/short)");
}

ggml_tensor* phi3_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const float scale = 1.0f / sqrtf((float)hp.n_embd_head_k);
    ggml_tensor* factors = blk_rope_factors(b);  // long, short or null
    ggml_tensor* x = blk_inp_embd(b);  // [n_embd, T]
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        ggml_tensor* h = blk_rms_norm(b, x, w.attn_norm);
        Qkv a = blk_qkv(b, h, w);
        a.q = blk_rope(b, a.q, hp.rope_base, hp.rope_freq_scale, factors);
        a.k = blk_rope(b, a.k, hp.rope_base, hp.rope_freq_scale, factors);
        ggml_tensor* o = blk_attention(b, il, a.q, a.k, a.v, scale, false);  // [n_embd, T]
        x = ggml_add(ctx, x, blk_mm(b, w.wo, o));
        h = blk_rms_norm(b, x, w.ffn_norm);
        x = ggml_add(ctx, x, blk_ffn(b, h, w, Glu::swiglu));  // ffn_gate null: fused gate/up
    }
    return blk_output(b, x);
}

}  // namespace lanner
