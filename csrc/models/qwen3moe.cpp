// Architecture `qwen3moe` (Qwen3-30B-A3B, 235B-A22B): the qwen3 attention block; the FFN is a
// mixture of experts: softmax router over expert_count experts, top expert_used_count chosen,
// their weights renormalised to sum 1 (expert_weights_norm, default true as Qwen3's
// norm_topk_prob), SwiGLU experts through ggml_mul_mat_id. No shared expert.
#include "arch.h"
#include "graph.h"

namespace lanner {

void qwen3_load_attention(Model& m);                       // models/qwen3.cpp
ggml_tensor* qwen3_attention(GraphBuild& b, int il, ggml_tensor* x);

void qwen3moe_load(Model& m) {
    qwen3_load_attention(m);
    m.read_moe_hparams();
    m.hp.expert_weights_norm = m.file->get_bool(m.key("expert_weights_norm"), true);
    for (int il = 0; il < m.hp.n_layer; ++il) {
        auto& w = m.layers[il];
        w.ffn_norm = m.need("blk." + std::to_string(il) + ".ffn_norm.weight", {m.hp.n_embd});
        m.bind_moe(il, w, /*biases=*/false);
    }
}

ggml_tensor* qwen3moe_build(GraphBuild& b) {
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = blk_inp_embd(b);  // [n_embd, T]
    for (int il = 0; il < b.m.hp.n_layer; ++il) {
        const auto& w = b.m.layers[il];
        x = qwen3_attention(b, il, x);
        ggml_tensor* h = blk_rms_norm(b, x, w.ffn_norm);
        x = ggml_add(ctx, x, blk_moe(b, h, w, MoeGating::softmax, MoeGlu::swiglu));
    }
    return blk_output(b, x);
}

}  // namespace lanner
