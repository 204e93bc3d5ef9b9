// Batch: one decode call's entries, spanning any number of sequences. Plain views over
// caller-owned arrays of equal length n (the bindings point them at numpy buffers).
#pragma once
#include <cstdint>

namespace lanner {

struct Batch {
    int n = 0;                        // entries (tokens)
    const int32_t* tokens = nullptr;  // [n] token ids
    const int32_t* pos = nullptr;     // [n] positions within their sequence
    const int32_t* seq = nullptr;     // [n] sequence ids
    const uint8_t* want = nullptr;    // [n] 1 = return this entry's logits
};

}  // namespace lanner
