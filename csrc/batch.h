// Batch: one decode call's entries, spanning any number of sequences. Plain views over
// caller-owned arrays of equal length n (the bindings point them at numpy buffers).
// Embedding rows (images): an entry whose token is < 0 takes the next row of `embd` instead of
// a token embedding. attn_end lets a block of entries see each other (Gemma 3's image tokens):
// an entry sees its sequence's cells at positions <= attn_end; such a block must fit one ubatch.
#pragma once
#include <cstdint>

namespace lanner {

struct Batch {
    int n = 0;                        // entries (tokens)
    const int32_t* tokens = nullptr;  // [n] token ids
    const int32_t* pos = nullptr;     // [n] positions within their sequence
    const int32_t* seq = nullptr;     // [n] sequence ids
    const uint8_t* want = nullptr;    // [n] 1 = return this entry's logits
    const float* embd = nullptr;      // [n_embd_rows, n_embd] rows for entries with token < 0, in entry order
    const int32_t* attn_end = nullptr;  // [n] or null (= pos, causal): last position each entry sees
};

}  // namespace lanner
