// The ubatch's input rows (see graph.h): token embeddings, with embedding rows given by the
// batch (image embeddings from a vision projector) written over the rows of their entries.
#include "graph.h"

namespace lanner {

ggml_tensor* blk_inp_embd(GraphBuild& b, float scale) {
    ggml_tensor* x = ggml_get_rows(b.ctx, b.m.tok_embd, b.in.tokens);  // [n_embd, T]
    if (scale != 1.0f) x = ggml_scale(b.ctx, x, scale);
    if (b.in.embd) x = ggml_set_rows(b.ctx, x, b.in.embd, b.in.embd_idx);  // rows embd_idx <- embd
    return x;
}

}  // namespace lanner
