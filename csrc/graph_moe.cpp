// Mixture-of-experts FFN block (see graph.h): router -> top-k experts -> weighted sum.
// The experts are stacked weights [.., .., n_expert]; ggml_mul_mat_id multiplies each token
// only by the rows of its chosen experts, so the cost is k experts per token, not n_expert.
#include <cmath>

#include "graph.h"

namespace lanner {

// Router: chosen experts I32 [k, T] (highest first) and their weights [1, k, T].
static void moe_route(GraphBuild& b, ggml_tensor* x, const LayerWeights& w, MoeGating gating,
                      ggml_tensor** sel, ggml_tensor** weights) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const int64_t k = hp.n_expert_used, T = x->ne[1];
    ggml_tensor* logits = blk_mm(b, w.ffn_gate_inp, x);  // [n_expert, T]
    if (w.ffn_gate_inp_b) logits = ggml_add(ctx, logits, w.ffn_gate_inp_b);
    ggml_tensor* probs = gating == MoeGating::softmax ? ggml_soft_max(ctx, logits) : logits;  // [n_expert, T]
    *sel = ggml_argsort_top_k(ctx, probs, (int)k);                                          // [k, T]
    ggml_tensor* wt = ggml_get_rows(ctx, ggml_reshape_3d(ctx, probs, 1, hp.n_expert, T), *sel);  // [1, k, T]
    if (gating == MoeGating::softmax_topk) {
        wt = ggml_soft_max(ctx, ggml_reshape_2d(ctx, wt, k, T));  // [k, T]
        wt = ggml_reshape_3d(ctx, wt, 1, k, T);
    } else if (hp.expert_weights_norm) {
        ggml_tensor* w2 = ggml_reshape_2d(ctx, wt, k, T);                               // [k, T]
        ggml_tensor* sum = ggml_clamp(ctx, ggml_sum_rows(ctx, w2), 6.103515625e-5f, INFINITY);  // [1, T]
        wt = ggml_reshape_3d(ctx, ggml_div(ctx, w2, sum), 1, k, T);
    }
    *weights = wt;
}

ggml_tensor* blk_moe(GraphBuild& b, ggml_tensor* x, const LayerWeights& w, MoeGating gating, MoeGlu glu) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const int64_t n_embd = x->ne[0], T = x->ne[1], k = hp.n_expert_used;
    ggml_tensor *sel, *weights;
    moe_route(b, x, w, gating, &sel, &weights);

    ggml_tensor* xe = ggml_reshape_3d(ctx, x, n_embd, 1, T);      // [n_embd, 1, T]
    ggml_tensor* up = ggml_mul_mat_id(ctx, w.ffn_up_exps, xe, sel);  // [n_ff_exp, k, T]
    if (w.ffn_up_exps_b) up = ggml_add_id(ctx, up, w.ffn_up_exps_b, sel);
    ggml_tensor* gate = ggml_mul_mat_id(ctx, w.ffn_gate_exps, xe, sel);  // [n_ff_exp, k, T]
    if (w.ffn_gate_exps_b) gate = ggml_add_id(ctx, gate, w.ffn_gate_exps_b, sel);
    ggml_tensor* h = glu == MoeGlu::swiglu ? ggml_swiglu_split(ctx, gate, up)
                                           : ggml_swiglu_oai(ctx, gate, up, /*alpha=*/1.702f, /*limit=*/7.0f);
    ggml_tensor* out = ggml_mul_mat_id(ctx, w.ffn_down_exps, h, sel);  // [n_embd, k, T]
    if (w.ffn_down_exps_b) out = ggml_add_id(ctx, out, w.ffn_down_exps_b, sel);
    out = ggml_mul(ctx, out, weights);  // [n_embd, k, T]

    // sum over the k experts, in rank order
    ggml_tensor* sum = nullptr;
    for (int64_t i = 0; i < k; ++i) {
        ggml_tensor* e = ggml_view_2d(ctx, out, n_embd, T, out->nb[2], i * out->nb[1]);  // [n_embd, T]
        sum = sum ? ggml_add(ctx, sum, e) : e;
    }
    return k == 1 ? ggml_cont(ctx, sum) : sum;
}

}  // namespace lanner
