// KvCache: cell bookkeeping + the K/V tensors.
#include "kv_cache.h"

#include <algorithm>
#include <cstring>

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
    if (ggml_backend_buffer_is_host(buf_))  // before the clear writes it (see model.cpp)
        advise_huge_pages(ggml_backend_buffer_get_base(buf_), ggml_backend_buffer_get_size(buf_));
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

// Lowest cell above every cell of each sequence in the batch; sequences with the highest
// floor choose first (their candidates are a subset of every lower floor's), so this finds a
// placement whenever one exists.
bool KvCache::place(int n, const int32_t* seq, const int32_t* pos, std::vector<int32_t>& out) const {
    out.assign(n, -1);
    std::vector<int32_t> floor(k_max_seq, -1);  // highest cell each sequence holds
    for (int i = 0; i < n_ctx; ++i)
        for (uint64_t m = cells[i].seqs; m; m &= m - 1) floor[__builtin_ctzll(m)] = i;
    std::vector<std::vector<int>> by_seq(k_max_seq);  // entries of each sequence, by position
    for (int i = 0; i < n; ++i) by_seq[seq[i]].push_back(i);
    std::vector<int> order;
    for (int s = 0; s < k_max_seq; ++s)
        if (!by_seq[s].empty()) order.push_back(s);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return floor[a] > floor[b]; });
    std::vector<char> taken(n_ctx, 0);
    for (int s : order) {
        auto& ent = by_seq[s];
        std::stable_sort(ent.begin(), ent.end(), [&](int a, int b) { return pos[a] < pos[b]; });
        size_t k = 0;
        for (int c = floor[s] + 1; c < n_ctx && k < ent.size(); ++c)
            if (!cells[c].seqs && !taken[c]) { taken[c] = 1; out[ent[k++]] = c; }
        if (k < ent.size()) return false;
    }
    return true;
}

// Moves row `from` to row `to` (to < from) of every K/V tensor, given a host copy of each.
static void move_rows(std::vector<std::vector<uint8_t>>& data, const std::vector<ggml_tensor*>& ts,
                      bool transposed, int32_t from, int32_t to) {
    for (size_t l = 0; l < ts.size(); ++l) {
        const ggml_tensor* t = ts[l];
        uint8_t* d = data[l].data();
        if (!transposed) {  // [n_embd, n_ctx]: a cell is a row of nb[1] bytes
            std::memcpy(d + (size_t)to * t->nb[1], d + (size_t)from * t->nb[1], t->nb[1]);
        } else {  // [n_ctx, n_embd]: a cell is one element in each of ne[1] rows
            const size_t es = ggml_type_size(t->type);
            for (int64_t r = 0; r < t->ne[1]; ++r)
                std::memcpy(d + r * t->nb[1] + (size_t)to * es, d + r * t->nb[1] + (size_t)from * es, es);
        }
    }
}

void KvCache::compact() {
    ++n_compactions;
    std::vector<std::vector<uint8_t>> kd(k.size()), vd(v.size());
    for (size_t l = 0; l < k.size(); ++l) {
        kd[l].resize(ggml_nbytes(k[l]));
        ggml_backend_tensor_get(k[l], kd[l].data(), 0, kd[l].size());
        vd[l].resize(ggml_nbytes(v[l]));
        ggml_backend_tensor_get(v[l], vd[l].data(), 0, vd[l].size());
    }
    int32_t to = 0;
    for (int32_t from = 0; from < n_ctx; ++from) {
        if (!cells[from].seqs) continue;
        if (from != to) {
            move_rows(kd, k, false, from, to);
            move_rows(vd, v, v_trans, from, to);
            cells[to] = cells[from];
            cells[from] = KvCell{};
        }
        ++to;
    }
    for (size_t l = 0; l < k.size(); ++l) {
        ggml_backend_tensor_set(k[l], kd[l].data(), 0, kd[l].size());
        ggml_backend_tensor_set(v[l], vd[l].data(), 0, vd[l].size());
    }
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
