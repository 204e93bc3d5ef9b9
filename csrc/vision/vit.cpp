// The ViT encoder blocks shared by every projector type (see vision_model.h): patch embedding
// (a stride-patch convolution), LayerNorm, pre-norm blocks with non-causal multi-head attention
// (flash attention) and a GELU MLP, each with optional biases.
#include <cmath>

#include "vision_model.h"

namespace lanner {

ggml_tensor* vit_norm(VisionBuild& b, ggml_tensor* x, ggml_tensor* w, ggml_tensor* bias) {
    x = ggml_norm(b.ctx, x, b.m.hp.eps);
    if (w) x = ggml_mul(b.ctx, x, w);
    if (bias) x = ggml_add(b.ctx, x, bias);
    return x;
}

ggml_tensor* vit_gelu(VisionBuild& b, ggml_tensor* x) {
    return b.m.hp.gelu ? ggml_gelu(b.ctx, x) : ggml_gelu_quick(b.ctx, x);
}

ggml_tensor* vit_patch_embd(VisionBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const int p = hp.patch_size, n_side = hp.n_patches_side();
    // [side, side, 3] -> [n_side, n_side, n_embd]: patch (px, py) in element (px, py)
    ggml_tensor* x = ggml_conv_2d(ctx, b.m.patch_w, b.pixels, p, p, 0, 0, 1, 1);
    x = ggml_reshape_2d(ctx, x, (int64_t)n_side * n_side, hp.n_embd);  // [n_patches, n_embd]
    x = ggml_cont(ctx, ggml_transpose(ctx, x));                          // [n_embd, n_patches], row-major patches
    if (b.m.patch_b) x = ggml_add(ctx, x, b.m.patch_b);
    return x;
}

// x: [n_embd, n_pos] (normed) -> [n_embd, n_pos]; every position sees every other. Flash
// attention with K/V in F16 (no [n_pos, n_pos, n_head] score matrix: 1 GiB at 4096 patches)
static ggml_tensor* vit_attention(VisionBuild& b, ggml_tensor* x, const VisionLayer& l) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    const int64_t n_pos = x->ne[1], hd = hp.n_embd / hp.n_head;
    auto proj = [&](ggml_tensor* w, ggml_tensor* bias) {
        ggml_tensor* t = ggml_mul_mat(ctx, w, x);
        if (bias) t = ggml_add(ctx, t, bias);
        t = ggml_reshape_3d(ctx, t, hd, hp.n_head, n_pos);  // [hd, n_head, n_pos]
        return ggml_permute(ctx, t, 0, 2, 1, 3);            // [hd, n_pos, n_head]
    };
    ggml_tensor* q = proj(l.q_w, l.q_b);
    ggml_tensor* k = ggml_cast(ctx, proj(l.k_w, l.k_b), GGML_TYPE_F16);
    ggml_tensor* v = ggml_cast(ctx, proj(l.v_w, l.v_b), GGML_TYPE_F16);
    ggml_tensor* a = ggml_flash_attn_ext(ctx, q, k, v, nullptr, 1.0f / sqrtf((float)hd), 0.0f, 0.0f);
    ggml_flash_attn_ext_set_prec(a, GGML_PREC_F32);  // a: [hd, n_head, n_pos]
    a = ggml_reshape_2d(ctx, a, hp.n_embd, n_pos);
    a = ggml_mul_mat(ctx, l.o_w, a);
    return l.o_b ? ggml_add(ctx, a, l.o_b) : a;
}

static ggml_tensor* vit_mlp(VisionBuild& b, ggml_tensor* x, const VisionLayer& l) {
    ggml_context* ctx = b.ctx;
    x = ggml_mul_mat(ctx, l.up_w, x);  // [n_ff, n_pos]
    if (l.up_b) x = ggml_add(ctx, x, l.up_b);
    x = ggml_mul_mat(ctx, l.down_w, vit_gelu(b, x));  // [n_embd, n_pos]
    return l.down_b ? ggml_add(ctx, x, l.down_b) : x;
}

ggml_tensor* vit_blocks(VisionBuild& b, ggml_tensor* x, int n_layer) {
    for (int il = 0; il < n_layer; ++il) {
        const VisionLayer& l = b.m.layers[il];
        x = ggml_add(b.ctx, x, vit_attention(b, vit_norm(b, x, l.ln1_w, l.ln1_b), l));
        x = ggml_add(b.ctx, x, vit_mlp(b, vit_norm(b, x, l.ln2_w, l.ln2_b), l));
    }
    return x;
}

}  // namespace lanner
