// Context: backends, scheduler, batch -> ubatches -> graph -> logits.
#include "context.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "arch.h"
#include "error.h"
#include "ggml-cpu.h"
#include "kernels/attn_rows.h"

namespace lanner {

Context::Context(std::shared_ptr<Model> model, const ContextParams& p) : model_(std::move(model)), params_(p) {
    const auto& hp = model_->hp;
    if (params_.n_ctx <= 0) throw std::invalid_argument("n_ctx must be > 0");
    if (params_.n_batch <= 0) throw std::invalid_argument("n_batch must be > 0");
    if (params_.n_seq_max <= 0 || params_.n_seq_max > k_max_seq)
        throw std::invalid_argument("n_seq_max must be in [1, " + std::to_string(k_max_seq) + "]");
    params_.n_batch = std::min(params_.n_batch, params_.n_ctx);

    backend_ = ggml_backend_dev_init(model_->device, nullptr);
    if (!backend_) throw std::runtime_error("could not initialise the ggml backend for " + std::string(ggml_backend_dev_name(model_->device)));
    if (ggml_backend_dev_type(model_->device) == GGML_BACKEND_DEVICE_TYPE_CPU) {
        backend_cpu_ = backend_;
    } else {
        backend_cpu_ = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    }
    set_n_threads(params_.n_threads);

    kv_ = std::make_unique<KvCache>(*model_, ggml_backend_dev_buffer_type(model_->device), params_.n_ctx,
                                    params_.n_seq_max, params_.type_k, params_.type_v, !use_flash_attn());

    // Batch-invariant flash attention on the CPU: each row visits only its own sequence's cells
    // (kernels/attn_rows.h, ggml's reference arithmetic); LANNER_ATTN_ROWS=0 keeps ggml's masked
    // kernel over [0, n_kv) (for comparison: bench/README.md).
    bool sinks = false;
    for (const auto& l : model_->layers) sinks = sinks || l.attn_sinks != nullptr;
    const char* rows_env = std::getenv("LANNER_ATTN_ROWS");
    use_attn_rows_ = params_.batch_invariant && use_flash_attn() && backend_ == backend_cpu_ &&
                     params_.type_k == GGML_TYPE_F16 && params_.type_v == GGML_TYPE_F16 &&
                     hp.n_embd_head_k % 32 == 0 && hp.n_embd_head_v % 32 == 0 && !sinks &&
                     !(rows_env && std::strcmp(rows_env, "0") == 0);
    // ggml's reference mode is what batch invariance needs from its flash-attention kernel; with
    // the per-row lists that kernel is not used, and reference mode would only turn off ggml's
    // op fusion (RMSNorm + weight multiply: the same bits, one pass and one thread barrier less).
    ggml_backend_cpu_set_use_ref(backend_cpu_, params_.batch_invariant != 0 && !use_attn_rows_);

    // Weights' matmuls through lanner's register-tiled kernel (kernels/mul_mat_q.h: ggml's bits,
    // fewer passes over each weight block); LANNER_MM_Q=0 keeps ggml_mul_mat, LANNER_MM_Q=gemm
    // keeps it for single columns only (both for comparison).
    const char* mm_env = std::getenv("LANNER_MM_Q");
    use_mm_q_ = backend_ == backend_cpu_ && !(mm_env && std::strcmp(mm_env, "0") == 0);
    mm_q_gemm_only_ = mm_env && std::strcmp(mm_env, "gemm") == 0;

    graph_size_ = std::max<size_t>(2048, (size_t)hp.n_layer * (64 + 2 * hp.n_expert_used));  // MoE: a view + add per expert
    graph_meta_.resize(ggml_tensor_overhead() * graph_size_ + ggml_graph_overhead_custom(graph_size_, false));

    std::vector<ggml_backend_t> backends{backend_};
    if (backend_cpu_ != backend_) backends.push_back(backend_cpu_);
    sched_ = ggml_backend_sched_new(backends.data(), nullptr, (int)backends.size(), graph_size_, false, true);

    // reserve compute memory for the worst ubatch: n_batch tokens over every cell
    drop_graph();
    Built w = build_graph(params_.n_batch, params_.n_ctx, std::min(params_.n_batch, params_.n_seq_max));
    bool ok = ggml_backend_sched_reserve(sched_, w.gf);
    ggml_free(w.ctx);
    if (!ok) throw std::runtime_error("could not reserve compute buffers");
}

Context::~Context() {
    drop_graph();
    if (sched_) ggml_backend_sched_free(sched_);
    kv_.reset();
    if (backend_cpu_ && backend_cpu_ != backend_) ggml_backend_free(backend_cpu_);
    if (backend_) ggml_backend_free(backend_);
    if (threadpool_) ggml_threadpool_free(threadpool_);
}

void Context::set_n_threads(int n) {
    if (n <= 0) n = (int)std::max(1u, std::thread::hardware_concurrency());
    n_threads_ = n;
    ggml_backend_cpu_set_n_threads(backend_cpu_, n);
    ggml_threadpool_params tp = ggml_threadpool_params_default(n);
    tp.poll = 0;  // workers sleep between graphs: the model thread samples in Python meanwhile
    ggml_threadpool_t pool = ggml_threadpool_new(&tp);
    if (!pool) throw std::runtime_error("could not start " + std::to_string(n) + " CPU threads");
    ggml_backend_cpu_set_threadpool(backend_cpu_, pool);
    if (threadpool_) ggml_threadpool_free(threadpool_);
    threadpool_ = pool;
}

const char* Context::device_name() const { return ggml_backend_dev_name(model_->device); }

bool Context::use_flash_attn() const { return params_.flash_attn != 0; }

// ---- graph ----------------------------------------------------------------------------------

constexpr int k_kv_pad = 32;  // n_kv granularity: decode-step graphs keep their shape for 32 steps

void Context::drop_graph() {
    if (graph_.ctx) ggml_free(graph_.ctx);
    graph_ = Built{};
    graph_shape_[0] = graph_shape_[1] = graph_shape_[2] = -1;
    graph_embd_rows_ = -1;
}

Context::Built Context::build_graph(int n_tokens, int n_kv, int n_outputs, int n_embd_rows) {
    ggml_init_params ip{graph_meta_.size(), graph_meta_.data(), /*no_alloc=*/true};
    Built r{};
    r.ctx = ggml_init(ip);
    r.gf = ggml_new_graph_custom(r.ctx, graph_size_, false);
    const auto& hp = model_->hp;
    auto input = [&](ggml_tensor* t, const char* name) { ggml_set_name(t, name); ggml_set_input(t); return t; };
    r.in.tokens = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I32, n_tokens), "inp_tokens");
    r.in.pos = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I32, n_tokens), "inp_pos");
    r.in.kv_idxs = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I64, n_tokens), "inp_kv_idxs");
    if (kv_->v_trans)
        r.in.v_idxs = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I64, (int64_t)hp.n_embd_v_gqa() * n_tokens), "inp_v_idxs");
    if (use_attn_rows_) {
        const int64_t cap = attn_rows_cap(n_tokens, n_kv, params_.n_seq_max);
        r.in.attn_cells = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I32, cap), "inp_attn_cells");
        r.in.attn_rows = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I32, 3 * (int64_t)n_tokens), "inp_attn_rows");
    } else {
        r.in.mask = input(ggml_new_tensor_2d(r.ctx, GGML_TYPE_F16, n_kv, n_tokens), "inp_mask");
        if (hp.n_swa > 0)
            r.in.mask_swa = input(ggml_new_tensor_2d(r.ctx, GGML_TYPE_F16, n_kv, n_tokens), "inp_mask_swa");
    }
    if (n_outputs > 0 && n_outputs != n_tokens)
        r.in.out_ids = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I32, n_outputs), "inp_out_ids");
    if (n_embd_rows > 0) {
        r.in.embd = input(ggml_new_tensor_2d(r.ctx, GGML_TYPE_F32, hp.n_embd, n_embd_rows), "inp_embd");
        r.in.embd_idx = input(ggml_new_tensor_1d(r.ctx, GGML_TYPE_I64, n_embd_rows), "inp_embd_idx");
    }

    GraphBuild b{r.ctx, r.gf, *model_, *kv_, r.in, n_tokens, n_kv, n_outputs};
    b.mm_q = use_mm_q_;
    b.mm_q_gemm_only = mm_q_gemm_only_;
    ggml_tensor* out = model_->arch->build(b);
    last_n_mm_q_ = b.n_mm_q;
    if (n_outputs > 0) {
        r.logits = out;
        ggml_set_output(out);
    }
    ggml_build_forward_expand(r.gf, out);
    return r;
}

// mask[t][c] = 0 if token t's sequence holds cell c at a position <= t's (and, for
// sliding-window layers, closer than n_swa positions), else -inf.
void Context::fill_masks(const Batch& b, int i0, int n_tokens, int n_kv) {
    const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f), ninf = ggml_fp32_to_fp16(-INFINITY);
    const int n_swa = model_->hp.n_swa;
    mask_.assign((size_t)n_tokens * n_kv, ninf);
    if (n_swa > 0) mask_swa_.assign((size_t)n_tokens * n_kv, ninf);
    const auto& cells = kv_->cells;
    for (int t = 0; t < n_tokens; ++t) {
        const uint64_t bit = (uint64_t)1 << b.seq[i0 + t];
        const int32_t p = b.pos[i0 + t];
        const int32_t p_end = b.attn_end ? b.attn_end[i0 + t] : p;  // > p inside a non-causal block
        ggml_fp16_t* row = &mask_[(size_t)t * n_kv];
        ggml_fp16_t* row_swa = n_swa > 0 ? &mask_swa_[(size_t)t * n_kv] : nullptr;
        for (int c = 0; c < n_kv; ++c) {
            if (!(cells[c].seqs & bit) || cells[c].pos > p_end) continue;
            row[c] = zero;
            if (row_swa && p - cells[c].pos < n_swa) row_swa[c] = zero;
        }
    }
}

// The ubatch's sequences' cells, each sequence's list in cell order (= position order) back to
// back; row t (sequence s, position p) sees the prefix of s's list with pos <= p, less (on
// sliding-window layers) the first `skip` entries, those with p - pos >= n_swa. Same cells, in
// the same order, as the unmasked ones of fill_masks' row.
void Context::fill_attn_rows(const Batch& b, int i0, int n_tokens, int n_kv) {
    const int n_swa = model_->hp.n_swa;
    const auto& cells = kv_->cells;
    uint64_t in_ubatch = 0;
    for (int t = 0; t < n_tokens; ++t) in_ubatch |= (uint64_t)1 << b.seq[i0 + t];
    int32_t len[k_max_seq] = {}, off[k_max_seq] = {}, end[k_max_seq] = {};
    for (int c = 0; c < n_kv; ++c)
        for (uint64_t m = cells[c].seqs & in_ubatch; m; m &= m - 1) ++len[__builtin_ctzll(m)];
    for (int s = 0, total = 0; s < k_max_seq; ++s) off[s] = end[s] = total, total += len[s];
    attn_cells_.assign(attn_rows_cap(n_tokens, n_kv, params_.n_seq_max), 0);
    for (int c = 0; c < n_kv; ++c)
        for (uint64_t m = cells[c].seqs & in_ubatch; m; m &= m - 1) attn_cells_[end[__builtin_ctzll(m)]++] = c;
    attn_rows_.resize(3 * (size_t)n_tokens);
    for (int t = 0; t < n_tokens; ++t) {
        const int s = b.seq[i0 + t];
        const int32_t p = b.pos[i0 + t];
        int32_t n = 0, skip = 0;
        while (n < len[s] && cells[attn_cells_[off[s] + n]].pos <= p) ++n;
        if (n_swa > 0)
            while (skip < n && p - cells[attn_cells_[off[s] + skip]].pos >= n_swa) ++skip;
        attn_rows_[3 * t] = off[s], attn_rows_[3 * t + 1] = n, attn_rows_[3 * t + 2] = skip;
    }
}

// ---- decode ---------------------------------------------------------------------------------

// embedding rows (entries with token < 0) before entry i0
static int embd_rows_before(const Batch& b, int i0) {
    int n = 0;
    for (int i = 0; i < i0; ++i) n += b.tokens[i] < 0 ? 1 : 0;
    return n;
}

// Ubatches of at most n_batch entries; a cut inside a block of entries that see later positions
// (attn_end > pos) moves back to the block's start, so each block is computed in one graph.
std::vector<int> Context::ubatch_ends(const Batch& b) const {
    std::vector<int> ends;
    for (int i0 = 0; i0 < b.n;) {
        int e = std::min(b.n, i0 + params_.n_batch);
        if (b.attn_end) {
            for (int i = i0; i < e; ++i)
                if (b.attn_end[i] < b.pos[i])
                    throw std::invalid_argument("attn_end < pos at entry " + std::to_string(i));
            while (e < b.n && e > i0 && b.attn_end[e - 1] > b.pos[e - 1]) --e;
            if (e == i0)
                throw std::invalid_argument("a non-causal block at entry " + std::to_string(i0) +
                                            " is longer than n_batch (" + std::to_string(params_.n_batch) + ")");
        }
        ends.push_back(e);
        i0 = e;
    }
    return ends;
}

int Context::decode(const Batch& b) {
    const auto& hp = model_->hp;
    if (b.n <= 0) throw std::invalid_argument("empty batch");
    int n_out = 0;
    for (int i = 0; i < b.n; ++i) {
        if ((b.tokens[i] < 0 && !b.embd) || b.tokens[i] >= hp.n_vocab)
            throw std::invalid_argument("token id " + std::to_string(b.tokens[i]) + " at entry " + std::to_string(i) +
                                        " is outside the vocabulary [0, " + std::to_string(hp.n_vocab) + ")");
        if (b.seq[i] < 0 || b.seq[i] >= params_.n_seq_max)
            throw std::invalid_argument("sequence id " + std::to_string(b.seq[i]) + " at entry " + std::to_string(i) +
                                        " is outside [0, " + std::to_string(params_.n_seq_max) + ")");
        if (b.pos[i] < 0) throw std::invalid_argument("negative position at entry " + std::to_string(i));
        n_out += b.want[i] ? 1 : 0;
    }
    const std::vector<int> ends = ubatch_ends(b);  // checks embedding rows and attn_end blocks
    const int n_free = kv_->n_ctx - kv_->n_used;
    if (n_free < b.n)
        throw KvCacheFullError("KV cache full: batch needs " + std::to_string(b.n) + " cells, " +
                               std::to_string(n_free) + " of " + std::to_string(kv_->n_ctx) + " are free");

    logits_.resize((size_t)n_out * hp.n_vocab);
    int out_row = 0;
    for (size_t u = 0, i0 = 0; u < ends.size(); i0 = ends[u++]) {
        const int n_tokens = ends[u] - (int)i0;
        decode_ubatch(b, (int)i0, n_tokens, out_row);
        for (int t = 0; t < n_tokens; ++t) out_row += b.want[i0 + t] ? 1 : 0;
    }
    return n_out;
}

void Context::decode_ubatch(const Batch& b, int i0, int n_tokens, int out_row0) {
    const auto& hp = model_->hp;
    std::vector<int32_t> cells;  // each sequence's cells stay in position order (see kv_cache.h)
    if (!kv_->place(n_tokens, b.seq + i0, b.pos + i0, cells)) {
        kv_->compact();  // free cells only below some sequence's last cell: pack the used ones down
        if (!kv_->place(n_tokens, b.seq + i0, b.pos + i0, cells))
            throw KvCacheFullError("KV cache: no placement for " + std::to_string(n_tokens) + " entries");
    }
    idx_.resize(n_tokens);
    out_ids_.clear();
    for (int t = 0; t < n_tokens; ++t) {
        kv_->occupy(cells[t], b.pos[i0 + t], b.seq[i0 + t]);
        idx_[t] = cells[t];
        if (b.want[i0 + t]) out_ids_.push_back(t);
    }
    const int n_kv = std::min(kv_->n_ctx, GGML_PAD(kv_->used_end(), k_kv_pad));
    const int n_outputs = (int)out_ids_.size();
    if (use_attn_rows_)
        fill_attn_rows(b, i0, n_tokens, n_kv);
    else
        fill_masks(b, i0, n_tokens, n_kv);
    const int embd_row0 = embd_rows_before(b, i0);
    tokens_.assign(b.tokens + i0, b.tokens + i0 + n_tokens);
    embd_idx_.clear();
    for (int t = 0; t < n_tokens; ++t)
        if (tokens_[t] < 0) tokens_[t] = 0, embd_idx_.push_back(t);
    const int n_embd_rows = (int)embd_idx_.size();

    if (graph_shape_[0] != n_tokens || graph_shape_[1] != n_kv || graph_shape_[2] != n_outputs ||
        graph_embd_rows_ != n_embd_rows) {
        drop_graph();
        graph_ = build_graph(n_tokens, n_kv, n_outputs, n_embd_rows);
        ggml_backend_sched_reset(sched_);
        if (!ggml_backend_sched_alloc_graph(sched_, graph_.gf)) {
            drop_graph();
            throw DecodeError("could not allocate the compute graph");
        }
        graph_shape_[0] = n_tokens, graph_shape_[1] = n_kv, graph_shape_[2] = n_outputs;
        graph_embd_rows_ = n_embd_rows;
    }
    const Built& g = graph_;
    auto set = [](ggml_tensor* t, const void* data, size_t nbytes) {
        if (t && t->buffer) ggml_backend_tensor_set(t, data, 0, nbytes);
    };
    set(g.in.tokens, tokens_.data(), sizeof(int32_t) * n_tokens);
    if (g.in.embd) {
        set(g.in.embd, b.embd + (size_t)embd_row0 * hp.n_embd, sizeof(float) * (size_t)n_embd_rows * hp.n_embd);
        set(g.in.embd_idx, embd_idx_.data(), sizeof(int64_t) * n_embd_rows);
    }
    set(g.in.pos, b.pos + i0, sizeof(int32_t) * n_tokens);
    set(g.in.kv_idxs, idx_.data(), sizeof(int64_t) * n_tokens);
    if (g.in.v_idxs) {  // element (d, t) of V goes to row d, column cell_t of the transposed cache
        const int64_t n_v = hp.n_embd_v_gqa();
        v_idx_.resize((size_t)n_v * n_tokens);
        for (int t = 0; t < n_tokens; ++t)
            for (int64_t d = 0; d < n_v; ++d) v_idx_[(size_t)t * n_v + d] = d * kv_->n_ctx + idx_[t];
        set(g.in.v_idxs, v_idx_.data(), sizeof(int64_t) * v_idx_.size());
    }
    if (use_attn_rows_) {
        set(g.in.attn_cells, attn_cells_.data(), sizeof(int32_t) * attn_cells_.size());
        set(g.in.attn_rows, attn_rows_.data(), sizeof(int32_t) * attn_rows_.size());
    } else {
        set(g.in.mask, mask_.data(), sizeof(ggml_fp16_t) * mask_.size());
        if (g.in.mask_swa) set(g.in.mask_swa, mask_swa_.data(), sizeof(ggml_fp16_t) * mask_swa_.size());
    }
    if (g.in.out_ids) set(g.in.out_ids, out_ids_.data(), sizeof(int32_t) * n_outputs);

    ggml_status st = ggml_backend_sched_graph_compute(sched_, g.gf);
    if (st != GGML_STATUS_SUCCESS) {
        drop_graph();
        throw DecodeError("graph compute failed (ggml status " + std::to_string((int)st) + ")");
    }
    if (n_outputs > 0)
        ggml_backend_tensor_get(g.logits, logits_.data() + (size_t)out_row0 * hp.n_vocab, 0,
                                sizeof(float) * (size_t)n_outputs * hp.n_vocab);
}

}  // namespace lanner
