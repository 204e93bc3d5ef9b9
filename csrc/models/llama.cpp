// Architecture `llama` (Llama 1/2/3.x, Mistral, SmolLM2): RMSNorm, normal (adjacent-pair) RoPE —
// GGUF stores q/k rows permuted for it —, GQA, SwiGLU FFN, tied output when output.weight is absent.
// Llama 3.1+ RoPE scaling: the converter bakes the low/high-frequency factors into the
// `rope_freqs` tensor [n_rot/2] (angles divided by it); `rope.scaling.type` is none, linear or
// llama3. A file declaring `attention.sliding_window` (Mistral v0.1) gets that window on every
// layer, as the original model does (llama.cpp ignores the key for this architecture).
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
    const std::string scaling = f.get_str(m.key("rope.scaling.type"), "none");
    if (scaling != "none" && scaling != "linear" && scaling != "llama3")
        f.fail("rope.scaling.type '" + scaling + "' is not supported for llama (none, linear, llama3)");
    hp.n_swa = (int)f.get_int(m.key("attention.sliding_window"), 0);
    if (hp.n_swa < 0) f.fail("bad hyperparameters: attention.sliding_window = " + std::to_string(hp.n_swa));
    hp.layer_is_swa.assign(hp.n_layer, hp.n_swa > 0 ? 1 : 0);
    m.bind_common();
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& w = m.layers[il];
        m.bind_attention(il, w);
        m.bind_ffn(il, w);
    }
    m.bind_rope_factors();
    if (m.rope_long) f.fail("rope_factors_long/short (LongRoPE) are not supported for llama");
    if (scaling == "llama3" && !m.rope_freqs)
        f.fail("rope.scaling.type llama3 needs the rope_freqs tensor (the converter's frequency factors)");
}

ggml_tensor* llama_build(GraphBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const float scale = 1.0f / sqrtf((float)hp.n_embd_head_k);
    ggml_tensor* factors = blk_rope_factors(b);  // rope_freqs or null
    ggml_tensor* x = blk_inp_embd(b);  // [n_embd, T]
    for (int il = 0; il < hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        ggml_tensor* h = blk_rms_norm(b, x, w.attn_norm);
        Qkv a = blk_qkv(b, h, w);
        a.q = blk_rope(b, a.q, hp.rope_base, hp.rope_freq_scale, factors);
        a.k = blk_rope(b, a.k, hp.rope_base, hp.rope_freq_scale, factors);
        ggml_tensor* o = blk_attention(b, il, a.q, a.k, a.v, scale, hp.layer_is_swa[il]);  // [n_head*hd_v, T]
        x = ggml_add(ctx, x, blk_mm(b, w.wo, o));
        h = blk_rms_norm(b, x, w.ffn_norm);
        x = ggml_add(ctx, x, blk_ffn(b, h, w, Glu::swiglu));
    }
    return blk_output(b, x);
}

}  // namespace lanner
