// KvCache: the multi-sequence key/value cache.
// Owns per-layer K and V tensors ([n_embd_{k,v}_gqa, n_ctx]) in one backend buffer and
// the cell table: each cell holds one position and the set of sequences that see it, so a
// prefix is shared between sequences by tagging (seq_cp), never by copying. A cell is free
// when no sequence holds it. Placement keeps every sequence's cells in position order (cell
// index grows with position), so attention visits them in the same order wherever they lie;
// when fragmentation leaves no such room, compact() packs the used cells down, order kept.
// Knows nothing of tokens or text.
#pragma once
#include <cstdint>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"

namespace lanner {

struct Model;

constexpr int k_max_seq = 64;  // sequences are bits of a uint64_t

struct KvCell {
    int32_t pos = -1;   // position in its sequences; -1 = free
    uint64_t seqs = 0;  // bit s set = sequence s sees this cell
    bool has(int s) const { return (seqs >> s) & 1u; }
};

struct KvCache {
    int n_ctx = 0;      // cells
    int n_seq_max = 0;  // sequence ids are 0..n_seq_max-1
    std::vector<KvCell> cells;
    bool v_trans = false;            // V stored transposed: [n_ctx, n_embd_v_gqa] (non-flash attention)
    std::vector<ggml_tensor*> k, v;  // [n_layer] of [n_embd_k_gqa, n_ctx]; v likewise or transposed
    int n_used = 0;                  // cells with at least one sequence
    int n_compactions = 0;           // compact() calls so far (tests and stats)

    KvCache(const Model& m, ggml_backend_buffer_type_t buft, int n_ctx, int n_seq_max, ggml_type type_k,
            ggml_type type_v, bool v_trans);
    ~KvCache();
    KvCache(const KvCache&) = delete;
    KvCache& operator=(const KvCache&) = delete;

    // Cells to visit in attention: [0, n_kv_span()) covers every used cell.
    int used_end() const;

    // Cells for n appended entries (seq[i], pos[i]): each entry gets a free cell above every
    // cell its sequence holds and above its sequence's earlier entries here (positions must
    // grow within a sequence), lowest such cell first. false (out unspecified) if the free
    // cells lie too low for that; compact() then makes it possible whenever n cells are free.
    bool place(int n, const int32_t* seq, const int32_t* pos, std::vector<int32_t>& out) const;
    // Move used cells down over the free ones, keeping their order (K/V rows move with them):
    // afterwards cells [0, n_used) are used and the rest free. Runs on the host (tensor get/set).
    void compact();
    void occupy(int32_t cell, int32_t pos, int seq);

    bool seq_rm(int seq, int32_t p0, int32_t p1);  // seq -1 = all; p -1 = open end
    void seq_cp(int src, int dst, int32_t p0, int32_t p1);
    void seq_keep(int seq);
    int32_t seq_pos_max(int seq) const;  // -1 if empty
    int32_t seq_pos_min(int seq) const;  // -1 if empty
    void clear();

  private:
    ggml_context* ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
    void release(KvCell& c, uint64_t drop);
};

}  // namespace lanner
