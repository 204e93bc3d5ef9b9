// Shared graph blocks (see graph.h).
#include "graph.h"

#include <cmath>

#include "kernels/attn_rows.h"
#include "kernels/mul_mat_q.h"

namespace lanner {

ggml_tensor* blk_rms_norm(GraphBuild& b, ggml_tensor* x, ggml_tensor* w) {
    x = ggml_rms_norm(b.ctx, x, b.m.hp.rms_eps);
    return ggml_mul(b.ctx, x, w);
}

ggml_tensor* blk_rope(GraphBuild& b, ggml_tensor* x, float base, float freq_scale, ggml_tensor* factors) {
    const auto& hp = b.m.hp;
    const int n_ctx_orig = hp.n_ctx_orig > 0 ? hp.n_ctx_orig : hp.n_ctx_train;  // YaRN's corr. dims
    return ggml_rope_ext(b.ctx, x, b.in.pos, factors, hp.n_rot, hp.rope_mode, n_ctx_orig, base, freq_scale,
                         hp.rope_ext_factor, hp.rope_attn_factor, /*beta_fast=*/32.0f, /*beta_slow=*/1.0f);
}

ggml_tensor* blk_mm(GraphBuild& b, ggml_tensor* w, ggml_tensor* x) {
    // a single column (a decode step) only for the types the op does faster there
    // (kernels/mul_mat_q.cpp k_mv_rows); mm_q_gemm_only keeps every single column on ggml's loop.
    // The same bits either way.
    const bool single = x->ne[1] == 1;
    const bool op = b.mm_q && !(single && (b.mm_q_gemm_only || !mul_mat_q_single_column_faster(w->type))) &&
                    mul_mat_q_supported(w, x);
    b.n_mm_q += op;
    return op ? mul_mat_q(b.ctx, w, x) : ggml_mul_mat(b.ctx, w, x);
}

ggml_tensor* blk_rope_factors(const GraphBuild& b) {
    const Model& m = b.m;
    if (m.rope_freqs) return m.rope_freqs;
    return b.kv.n_ctx > m.hp.n_ctx_orig ? m.rope_long : m.rope_short;
}

Qkv blk_qkv(GraphBuild& b, ggml_tensor* h, const LayerWeights& w) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const int64_t hk = hp.n_embd_head_k, hv = hp.n_embd_head_v, T = b.n_tokens;
    if (!w.wqkv) {
        auto proj = [&](ggml_tensor* wt, ggml_tensor* bias, int64_t hd, int64_t n_h) {
            ggml_tensor* t = blk_mm(b, wt, h);  // [hd*n_h, T]
            if (bias) t = ggml_add(ctx, t, bias);
            return ggml_reshape_3d(ctx, t, hd, n_h, T);
        };
        return {proj(w.wq, w.bq, hk, hp.n_head), proj(w.wk, w.bk, hk, hp.n_head_kv), proj(w.wv, w.bv, hv, hp.n_head_kv)};
    }
    ggml_tensor* qkv = blk_mm(b, w.wqkv, h);  // [n_head*hk + n_head_kv*(hk + hv), T]: q, k, v rows
    const size_t es = ggml_element_size(qkv);
    const size_t off_k = es * hk * hp.n_head, off_v = off_k + es * hk * hp.n_head_kv;
    ggml_tensor* q = ggml_view_3d(ctx, qkv, hk, hp.n_head, T, es * hk, qkv->nb[1], 0);
    ggml_tensor* k = ggml_view_3d(ctx, qkv, hk, hp.n_head_kv, T, es * hk, qkv->nb[1], off_k);
    ggml_tensor* v = ggml_view_3d(ctx, qkv, hv, hp.n_head_kv, T, es * hv, qkv->nb[1], off_v);
    return {ggml_cont(ctx, q), ggml_cont(ctx, k), ggml_cont(ctx, v)};  // contiguous for reshapes
}

ggml_tensor* blk_attention(GraphBuild& b, int il, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v,
                           float scale, bool swa, ggml_tensor* sinks) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    ggml_tensor* k_cache = b.kv.k[il];  // [n_embd_k_gqa, n_ctx]
    ggml_tensor* v_cache = b.kv.v[il];  // [n_embd_v_gqa, n_ctx], or [n_ctx, n_embd_v_gqa] if v_trans
    ggml_tensor* mask = swa ? b.in.mask_swa : b.in.mask;

    // write this ubatch's K/V into its cells: K rows kv_idxs; V rows, or V elements v_idxs
    ggml_tensor* k2 = ggml_reshape_2d(ctx, k, hp.n_embd_k_gqa(), b.n_tokens);
    ggml_build_forward_expand(b.gf, ggml_set_rows(ctx, k_cache, k2, b.in.kv_idxs));
    if (b.kv.v_trans) {
        const int64_t n = (int64_t)hp.n_embd_v_gqa() * b.n_tokens;
        ggml_tensor* dst = ggml_reshape_2d(ctx, v_cache, 1, ggml_nelements(v_cache));
        ggml_build_forward_expand(b.gf, ggml_set_rows(ctx, dst, ggml_reshape_2d(ctx, v, 1, n), b.in.v_idxs));
    } else {
        ggml_tensor* v2 = ggml_reshape_2d(ctx, v, hp.n_embd_v_gqa(), b.n_tokens);
        ggml_build_forward_expand(b.gf, ggml_set_rows(ctx, v_cache, v2, b.in.kv_idxs));
    }

    if (b.in.attn_rows && !sinks) {  // each row over its own cells (same arithmetic as below)
        ggml_tensor* out = attn_rows(ctx, q, k_cache, v_cache, b.in.attn_cells, b.in.attn_rows, hp.n_head_kv, scale,
                                     hp.attn_softcap, swa);  // [hd_v, n_head, T]
        return ggml_reshape_2d(ctx, out, hp.n_embd_head_v * hp.n_head, b.n_tokens);
    }

    // keys of the visited cells: [hd_k, n_kv, n_head_kv]
    ggml_tensor* kv_k = ggml_view_3d(ctx, k_cache, hp.n_embd_head_k, b.n_kv, hp.n_head_kv, k_cache->nb[1],
                                     ggml_row_size(k_cache->type, hp.n_embd_head_k), 0);
    q = ggml_permute(ctx, q, 0, 2, 1, 3);  // [hd_k, T, n_head]
    ggml_tensor* out;
    if (!b.kv.v_trans) {
        ggml_tensor* kv_v = ggml_view_3d(ctx, v_cache, hp.n_embd_head_v, b.n_kv, hp.n_head_kv, v_cache->nb[1],
                                         ggml_row_size(v_cache->type, hp.n_embd_head_v), 0);
        out = ggml_flash_attn_ext(ctx, q, kv_k, kv_v, mask, scale, 0.0f, hp.attn_softcap);
        if (sinks) ggml_flash_attn_ext_add_sinks(out, sinks);
        ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32);  // out: [hd_v, n_head, T]
    } else {
        ggml_tensor* kq = ggml_mul_mat(ctx, kv_k, q);  // [n_kv, T, n_head]; head h reads kv head h/group
        if (hp.attn_softcap > 0.0f) {  // cap * tanh(scale * kq / cap), then softmax unscaled
            kq = blk_softcap(b, ggml_scale(ctx, kq, scale), hp.attn_softcap);
            kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f, 0.0f);
        } else {
            kq = ggml_soft_max_ext(ctx, kq, mask, scale, 0.0f);
        }
        if (sinks) ggml_soft_max_add_sinks(kq, sinks);
        // values of the visited cells, transposed: [n_kv, hd_v, n_head_kv]
        ggml_tensor* kv_v = ggml_view_3d(ctx, v_cache, b.n_kv, hp.n_embd_head_v, hp.n_head_kv, v_cache->nb[1],
                                         v_cache->nb[1] * hp.n_embd_head_v, 0);
        out = ggml_mul_mat(ctx, kv_v, kq);                           // [hd_v, T, n_head]
        out = ggml_cont(ctx, ggml_permute(ctx, out, 0, 2, 1, 3));  // [hd_v, n_head, T]
    }
    return ggml_reshape_2d(ctx, out, hp.n_embd_head_v * hp.n_head, b.n_tokens);
}

ggml_tensor* blk_ffn(GraphBuild& b, ggml_tensor* x, const LayerWeights& w, Glu glu) {
    if (!w.ffn_gate) {  // fused: [2*n_ff, T], gate rows then up rows
        ggml_tensor* gu = blk_mm(b, w.ffn_up, x);
        ggml_tensor* h = glu == Glu::swiglu ? ggml_swiglu(b.ctx, gu) : ggml_geglu(b.ctx, gu);  // [n_ff, T]
        return blk_mm(b, w.ffn_down, h);
    }
    ggml_tensor* gate = blk_mm(b, w.ffn_gate, x);  // [n_ff, T]
    ggml_tensor* up = blk_mm(b, w.ffn_up, x);      // [n_ff, T]
    ggml_tensor* h = glu == Glu::swiglu ? ggml_swiglu_split(b.ctx, gate, up) : ggml_geglu_split(b.ctx, gate, up);
    return blk_mm(b, w.ffn_down, h);  // [n_embd, T]
}

ggml_tensor* blk_softcap(GraphBuild& b, ggml_tensor* x, float cap) {
    return ggml_scale(b.ctx, ggml_tanh(b.ctx, ggml_scale(b.ctx, x, 1.0f / cap)), cap);
}

ggml_tensor* blk_output(GraphBuild& b, ggml_tensor* x) {
    if (b.n_outputs == 0) return x;  // KV-only ubatch: nothing to project
    if (b.n_outputs != b.n_tokens) x = ggml_get_rows(b.ctx, x, b.in.out_ids);  // [n_embd, n_outputs]
    x = blk_rms_norm(b, x, b.m.output_norm);
    x = blk_mm(b, b.m.output, x);  // [n_vocab, n_outputs]
    return b.m.hp.final_softcap > 0.0f ? blk_softcap(b, x, b.m.hp.final_softcap) : x;
}

}  // namespace lanner
