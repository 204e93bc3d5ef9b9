// Projector `gemma3` (Gemma 3's SigLIP encoder + average-pool projector): patch embedding +
// learned positions, every encoder block, post-LayerNorm; the patch grid average-pooled by
// n_merge x n_merge (clip.vision.projector.scale_factor, default 4: 64x64 -> 16x16 = 256 tokens);
// RMSNorm with the soft embedding norm weight; a linear map to the text model's width.
#include "vision_model.h"

namespace lanner {

static ggml_tensor* as_f32(ggml_context* ctx, ggml_tensor* t) {
    return t->type == GGML_TYPE_F32 ? t : ggml_cast(ctx, t, GGML_TYPE_F32);
}

void gemma3_proj_load(VisionModel& m) {
    auto& hp = m.hp;
    hp.n_merge = (int)m.file->get_int("clip.vision.projector.scale_factor", 4);
    const int side = hp.n_patches_side();
    if (hp.n_merge <= 0 || side % hp.n_merge)
        m.file->fail("bad hyperparameters: projector.scale_factor = " + std::to_string(hp.n_merge) +
                     " does not divide the " + std::to_string(side) + " patches per side");
    if (m.class_embd) m.file->fail("projector gemma3 takes no class embedding (v.class_embd)");
    m.mm_soft_norm = m.need("mm.soft_emb_norm.weight", {hp.n_embd});
    m.mm_input_proj = m.need("mm.input_projection.weight", {-1, hp.n_embd});
    const int out = (int)m.mm_input_proj->ne[0];
    if (hp.n_embd_out != 0 && hp.n_embd_out != out)
        m.file->fail("clip.vision.projection_dim = " + std::to_string(hp.n_embd_out) +
                     " but mm.input_projection maps to " + std::to_string(out));
    hp.n_embd_out = out;
}

int gemma3_proj_n_tokens(const VisionModel& m) {
    const int s = m.hp.n_patches_side() / m.hp.n_merge;
    return s * s;
}

ggml_tensor* gemma3_proj_build(VisionBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = vit_patch_embd(b);  // [n_embd, n_patches]
    x = ggml_add(ctx, x, as_f32(ctx, b.m.pos_embd));
    if (b.m.pre_ln_w) x = vit_norm(b, x, b.m.pre_ln_w, b.m.pre_ln_b);
    x = vit_blocks(b, x, hp.n_layer);
    if (b.m.post_ln_w) x = vit_norm(b, x, b.m.post_ln_w, b.m.post_ln_b);

    const int side = hp.n_patches_side(), out_side = side / hp.n_merge;
    x = ggml_cont(ctx, ggml_transpose(ctx, x));                // [n_patches, n_embd]
    x = ggml_reshape_3d(ctx, x, side, side, hp.n_embd);         // [x, y, n_embd]
    x = ggml_pool_2d(ctx, x, GGML_OP_POOL_AVG, hp.n_merge, hp.n_merge, hp.n_merge, hp.n_merge, 0, 0);
    x = ggml_reshape_2d(ctx, x, (int64_t)out_side * out_side, hp.n_embd);
    x = ggml_cont(ctx, ggml_transpose(ctx, x));                 // [n_embd, n_tokens]
    x = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.eps), b.m.mm_soft_norm);
    ggml_tensor* w = ggml_cont(ctx, ggml_transpose(ctx, b.m.mm_input_proj));  // [n_embd, n_embd_out]
    return ggml_mul_mat(ctx, w, x);                             // [n_embd_out, n_tokens]
}

}  // namespace lanner
