// Projector `mlp` (LLaVA-style CLIP + two-layer MLP): patch embedding, the class token first
// (when the file has v.class_embd), learned positions, pre-LayerNorm; every block but the last
// (LLaVA reads the penultimate layer), post-LayerNorm if present; the class row dropped; then
// mm.0 -> GELU -> mm.2 to the text model's width. One token per patch.
#include "vision_model.h"

namespace lanner {

static ggml_tensor* as_f32(ggml_context* ctx, ggml_tensor* t) {
    return t->type == GGML_TYPE_F32 ? t : ggml_cast(ctx, t, GGML_TYPE_F32);
}

void mlp_proj_load(VisionModel& m) {
    auto& hp = m.hp;
    m.mm_0_w = m.need("mm.0.weight", {hp.n_embd, -1});
    const int64_t hidden = m.mm_0_w->ne[1];
    m.mm_0_b = m.need("mm.0.bias", {hidden});
    m.mm_2_w = m.need("mm.2.weight", {hidden, -1});
    const int out = (int)m.mm_2_w->ne[1];
    m.mm_2_b = m.need("mm.2.bias", {out});
    if (m.file->tensor("mm.3.weight")) m.file->fail("mlp projectors with norms (mm.3/mm.4, Yi-style) are not supported");
    if (hp.n_embd_out != 0 && hp.n_embd_out != out)
        m.file->fail("clip.vision.projection_dim = " + std::to_string(hp.n_embd_out) + " but mm.2 maps to " + std::to_string(out));
    hp.n_embd_out = out;
    if (hp.n_layer < 2) m.file->fail("projector mlp needs at least 2 encoder blocks (it reads the penultimate)");
}

int mlp_proj_n_tokens(const VisionModel& m) { return m.hp.n_patches_side() * m.hp.n_patches_side(); }

ggml_tensor* mlp_proj_build(VisionBuild& b) {
    const auto& hp = b.m.hp;
    ggml_context* ctx = b.ctx;
    ggml_tensor* x = vit_patch_embd(b);  // [n_embd, n_patches]
    const int64_t n_patches = x->ne[1];
    if (b.m.class_embd) {
        ggml_tensor* cls = ggml_reshape_2d(ctx, as_f32(ctx, b.m.class_embd), hp.n_embd, 1);
        x = ggml_concat(ctx, cls, x, 1);  // [n_embd, 1 + n_patches]
    }
    x = ggml_add(ctx, x, as_f32(ctx, b.m.pos_embd));
    if (b.m.pre_ln_w) x = vit_norm(b, x, b.m.pre_ln_w, b.m.pre_ln_b);
    x = vit_blocks(b, x, hp.n_layer - 1);
    if (b.m.post_ln_w) x = vit_norm(b, x, b.m.post_ln_w, b.m.post_ln_b);
    if (b.m.class_embd)  // drop the class row
        x = ggml_view_2d(ctx, x, hp.n_embd, n_patches, x->nb[1], x->nb[1]);
    x = ggml_add(ctx, ggml_mul_mat(ctx, b.m.mm_0_w, x), b.m.mm_0_b);  // [hidden, n_patches]
    x = ggml_gelu(ctx, x);
    return ggml_add(ctx, ggml_mul_mat(ctx, b.m.mm_2_w, x), b.m.mm_2_b);  // [n_embd_out, n_patches]
}

}  // namespace lanner
