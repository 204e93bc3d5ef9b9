// mul_mat_q's shared pieces: ggml's block layouts, the job one thread runs.
// Internal to mul_mat_q.cpp (its only includer), which is built with -ffp-contract=off: every
// fused multiply-add is written out, as in the kernel whose rounding it keeps.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ggml.h"

namespace lanner::mmq {

// ggml's block layouts (ggml-common.h), fp16 fields as raw bits
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ8_1 { uint16_t d, s; int8_t qs[32]; };  // s = d * sum(qs)
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };     // element e: e < 16 low nibble of qs[e], else high of qs[e-16]
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };  // x = d*q + m
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };  // q = nibble | bit e of qh << 4, minus 16
// K-quants: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins
struct BlockQ4K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };  // sub-block 2j: low nibbles of qs[32j..], 2j+1: high
struct BlockQ8K { float d; int8_t qs[256]; int16_t bsums[16]; };             // bsums: sums of 16 qs
// Q6_K: element 128h + 32t + e (h < 2, t < 4, e < 32): low 4 bits in ql[64h + 32(t&1) + e] (low
// nibble for t < 2, high for t >= 2), high 2 bits at bit 2t of qh[32h + e]; value - 32; 16
// sub-blocks of 16 with int8 scales.
struct BlockQ6K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36 && sizeof(BlockQ4_0) == 18 &&
              sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ4K) == 144 &&
              sizeof(BlockQ8K) == 292 && sizeof(BlockQ6K) == 210, "ggml block layouts");

// What a 32-element type's stored value adds to its weight value (u = w + offset, u unsigned):
// Q4_0's nibble = w + 8, Q5_0's 5 bits = w + 16, Q8_0's byte read as unsigned after xor 0x80 =
// w + 128; Q4_1's nibble is unsigned already (0). The AVX-512 tiles multiply u and correct by
// -offset x the column's sums.
constexpr int u8_offset(ggml_type t) {
    return t == GGML_TYPE_Q8_0 ? 128 : t == GGML_TYPE_Q4_0 ? 8 : t == GGML_TYPE_Q5_0 ? 16 : 0;
}
template <class W> constexpr ggml_type k_block_type = GGML_TYPE_COUNT;
template <> constexpr ggml_type k_block_type<BlockQ8_0> = GGML_TYPE_Q8_0;
template <> constexpr ggml_type k_block_type<BlockQ4_0> = GGML_TYPE_Q4_0;
template <> constexpr ggml_type k_block_type<BlockQ4_1> = GGML_TYPE_Q4_1;
template <> constexpr ggml_type k_block_type<BlockQ5_0> = GGML_TYPE_Q5_0;

// The 8 sub-block scales and mins of a Q4_K super-block (6 bits each, packed in 12 bytes b):
// sc[0..3] = b[0..3] & 63, mn[0..3] = b[4..7] & 63, and for k = 4..7 the low 4 bits from
// b[k+4] (sc: low nibble, mn: high nibble) with the high 2 bits from the top bits of b[k-4]
// (sc) or b[k] (mn). Done 4 bytes at a time: a word shifted right by 2 brings each byte's top
// 2 bits to its bits 4-5.
inline void q4k_scales(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
    uint32_t w[3];
    std::memcpy(w, q, 12);
    const uint32_t lo6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, b45 = 0x30303030;
    const uint32_t s[2] = {w[0] & lo6, (w[2] & lo4) | ((w[0] >> 2) & b45)};
    const uint32_t m[2] = {w[1] & lo6, ((w[2] >> 4) & lo4) | ((w[1] >> 2) & b45)};
    std::memcpy(sc, s, 8);
    std::memcpy(mn, m, 8);
}

inline float h2f(uint16_t h) { return ggml_fp16_to_fp32((ggml_fp16_t)h); }

// One multiply: W rows, X columns quantized to the weight type's dot type, Y columns.
struct Job {
    const char* w;        // row r at w + r * w_stride
    size_t w_stride;
    int nb;               // blocks per row (K / the weight type's block size)
    const char* a;        // quantized column c at a + c * a_stride
    size_t a_stride;
    const float* ad;      // [M][nb] column block scales (Q8_K: the super-block's d)
    const float* as;      // [M][nb] Q8_1 d*sum (Q4_1 only)
    float* y;             // Y[c][r] at y[c * y_stride + r]
    size_t y_stride;
    size_t prefetch = 0;  // a single column: fetch the weight bytes this far ahead into cache (0: none)
    // Columns 2p, 2p+1 side by side, for the AVX-512 tiles (PairedX in mul_mat_q.cpp; null when
    // not built): block ib of pair p at index p * nb + ib.
    const int8_t* y2 = nullptr;    // [pairs][nb][64] the two columns' 32 quantized values
    const int32_t* corr2 = nullptr;  // [pairs][nb][16] -offset x the sums of 4 values per lane
    const float* as_t = nullptr;     // Q4_1: `as` by block, then column: block ib, column c at ib * as_t_stride + c
    size_t as_t_stride = 0;
};

}  // namespace lanner::mmq
