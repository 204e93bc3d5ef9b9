// Architecture `gemma2`: embeddings scaled by sqrt(n_embd); NeoX RoPE; post-attention and
// post-FFN norms; GeGLU (tanh GELU) FFN; attention scores soft-capped (attn_logit_softcapping,
// default 50) and logits soft-capped (final_logit_softcapping, default 30); sliding-window layers
// alternating with global ones (attention.sliding_window_pattern, default 2: even layers local,
// window default 4096), one RoPE base for both; attention scale 1/sqrt(key_length)
// (1/sqrt(n_embd/n_head) for the 46-layer 27B); output tied to the embeddings.
// GGUF norm weights already carry Gemma's (1 + w) offset.
#include <cmath>

#include "arch.h"
#include "graph.h"

namespace lanner {

void gemma2_load(Model& m) {
    auto& hp = m.hp;
    auto& f = *m.file;
    m.read_base_hparams(/*n_ctx_train=*/8192, /*rms_eps=*/1e-6f, /*rope_base=*/10000.0f);
    hp.rope_base_swa = (float)f.get_float(m.key("rope.freq_base_swa"), hp.rope_base);
    hp.n_embd_head_k = (int)f.get_int(m.key("attention.key_length"), hp.n_embd / hp.n_head);
    hp.n_embd_head_v = (int)f.get_int(m.key("attention.value_length"), hp.n_embd_head_k);
    hp.n_rot = hp.n_embd_head_k;
    hp.rope_mode = GGML_ROPE_TYPE_NEOX;
    hp.n_swa = (int)f.get_int(m.key("attention.sliding_window"), 4096);
    const int64_t period = f.get_int(m.key("attention.sliding_window_pattern"), 2);
    if (hp.n_swa <= 0 || period <= 0)
        f.fail("bad hyperparameters: attention.sliding_window = " + std::to_string(hp.n_swa) +
               ", sliding_window_pattern = " + std::to_string(period));
    hp.layer_is_swa.assign(hp.n_layer, 0);
    for (int il = 0; il < hp.n_layer; ++il) hp.layer_is_swa[il] = il % period < period - 1;
    hp.attn_softcap = (float)f.get_float(m.key("attn_logit_softcapping"), 50.0);
    hp.final_softcap = (float)f.get_float(m.key("final_logit_softcapping"), 30.0);
    if (!(hp.attn_softcap > 0.0f && std::isfinite(hp.attn_softcap)) ||
        !(hp.final_softcap > 0.0f && std::isfinite(hp.final_softcap)))
        f.fail("bad hyperparameters: soft-capping values must be positive");
    const bool is_27b = hp.n_layer == 46;
    hp.attn_scale = 1.0f / sqrtf(is_27b ? (float)(hp.n_embd / hp.n_head) : (float)hp.n_embd_head_k);

    m.bind_common();
    m.output = m.tok_embd;  // always tied
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        const std::string p = "blk." + std::to_string(il) + ".";
        m.bind_attention(il, w);
        m.bind_ffn(il, w);
        w.post_attn_norm = m.need(p + "post_attention_norm.weight", {hp.n_embd});
        w.post_ffn_norm = m.need(p + "post_ffw_norm.weight", {hp.n_embd});
    }
}

ggml_tensor* gemma2_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = blk_inp_embd(b, sqrtf((float)hp.n_embd));  // [n_embd, T]; image rows unscaled
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        const bool swa = hp.layer_is_swa[il];
        const float base = swa ? hp.rope_base_swa : hp.rope_base;
        ggml_tensor* h = blk_rms_norm(b, x, w.attn_norm);
        Qkv a = blk_qkv(b, h, w);
        a.q = blk_rope(b, a.q, base, hp.rope_freq_scale);
        a.k = blk_rope(b, a.k, base, hp.rope_freq_scale);
        ggml_tensor* o = blk_attention(b, il, a.q, a.k, a.v, hp.attn_scale, swa);  // [n_head*hd_v, T]
        x = ggml_add(ctx, x, blk_rms_norm(b, blk_mm(b, w.wo, o), w.post_attn_norm));
        h = blk_rms_norm(b, x, w.ffn_norm);
        x = ggml_add(ctx, x, blk_rms_norm(b, blk_ffn(b, h, w, Glu::geglu), w.post_ffn_norm));
    }
    return blk_output(b, x);  // final soft-cap inside
}

}  // namespace lanner
