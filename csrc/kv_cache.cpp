// KvCache: cell bookkeeping + the K/V tensors.
#include "kv_cache.h"

#include "error.h"
#include "model.h"

namespace lanner {

KvCache::KvCache(const Model& m, ggml_backend_buffer_type_t buft, int n_ctx_, int n_seq_max_, ggml_type type_k,
                 ggml_type type_v, bool v_trans_)
    : n_ctx(n_ctx_), n_seq_max(n_seq_max_), cells(n_ctx_), v_trans(v_trans_) {
    const auto& hp = m.hp;
    ggml_init_params ip{ggml_tensor_overhead() * (size_t)(2 * hp.n_layer + 1), nullptr, true};
    ctx_ = ggml_init(ip);
    for (int il = 0; il < hp.n_layer; ++il) {
        k.push_back(ggml_new_tensor_2d(ctx_, type_k, hp.n_embd_k_gqa(), n_ctx));
        v.push_back(v_trans ? ggml_new_tensor_2d(ctx_, type_v, n_ctx, hp.n_embd_v_gqa())
                            : ggml_new_tensor_2d(ctx_, type_v, hp.n_embd_v_gqa(), n_ctx));
    }
    buf_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, buft);
    if (!buf_) throw std::runtime_error("could not allocate the KV cache (" + std::to_string(n_ctx) + " cells)");
    ggml_backend_buffer_clear(buf_, 0);
}

KvCache::~KvCache() {
    if (buf_) ggml_backend_buffer_free(buf_);
    if (ctx_) ggml_free(ctx_);
}

int KvCache::used_end() const {
    for (int i = n_ctx - 1; i >= 0; --i)
        if (cells[i].seqs) return i + 1;
    return 0;
}

bool KvCache::find_free(int n, std::vector<int32_t>& out) const {
    out.clear();
    for (int i = 0; i < n_ctx && (int)out.size() < n; ++i)
        if (!cells[i].seqs) out.push_back(i);
    return (int)out.size() == n;
}

void KvCache::occupy(int32_t cell, int32_t pos, int seq) {
    KvCell& c = cells[cell];
    if (!c.seqs) ++n_used;
    c.pos = pos;
    c.seqs |= (uint64_t)1 << seq;
}

void KvCache::release(KvCell& c, uint64_t drop) {
    if (!(c.seqs & drop)) return;
    c.seqs &= ~drop;
    if (!c.seqs) { c.pos = -1; --n_used; }
}

static bool in_range(int32_t pos, int32_t p0, int32_t p1) {
    return (p0 < 0 || pos >= p0) && (p1 < 0 || pos < p1);
}

bool KvCache::seq_rm(int seq, int32_t p0, int32_t p1) {
    const uint64_t drop = seq < 0 ? ~(uint64_t)0 : (uint64_t)1 << seq;
    for (auto& c : cells)
        if (c.seqs && in_range(c.pos, p0, p1)) release(c, drop);
    return true;
}

void KvCache::seq_cp(int src, int dst, int32_t p0, int32_t p1) {
    if (src == dst) return;
    for (auto& c : cells)
        if (c.has(src) && in_range(c.pos, p0, p1)) c.seqs |= (uint64_t)1 << dst;
}

void KvCache::seq_keep(int seq) {
    const uint64_t drop = ~((uint64_t)1 << seq);
    for (auto& c : cells)
        if (c.seqs) release(c, drop);
}

int32_t KvCache::seq_pos_max(int seq) const {
    int32_t r = -1;
    for (const auto& c : cells)
        if (c.has(seq) && c.pos > r) r = c.pos;
    return r;
}

int32_t KvCache::seq_pos_min(int seq) const {
    int32_t r = -1;
    for (const auto& c : cells)
        if (c.has(seq) && (r < 0 || c.pos < r)) r = c.pos;
    return r;
}

void KvCache::clear() {
    for (auto& c : cells) c = KvCell{};
    n_used = 0;
}

}  // namespace lanner
