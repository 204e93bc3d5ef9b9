// Model: hyperparameters and weights of one GGUF model, resident in a backend buffer.
// Owns the GgufFile, the weight buffer and the chosen device. Architecture specifics live in
// models/<arch>.cpp and are reached through the ArchDef table (arch.h). No KV cache, no
// strings beyond names: tokenizer metadata is read by the bindings straight from the file.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf_file.h"

namespace lanner {

struct ArchDef;

struct HParams {
    int n_vocab = 0;
    int n_ctx_train = 0;  // tokens
    int n_embd = 0;
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int n_embd_head_k = 0;  // per-head key dim
    int n_embd_head_v = 0;  // per-head value dim
    int n_ff = 0;
    int n_rot = 0;          // rotated dims per head
    int rope_mode = 0;      // GGML_ROPE_TYPE_NORMAL (0) or GGML_ROPE_TYPE_NEOX
    float rms_eps = 1e-5f;
    float rope_base = 10000.0f;        // global layers
    float rope_freq_scale = 1.0f;      // global layers (1/linear factor)
    float rope_base_swa = 10000.0f;    // sliding-window layers
    float rope_attn_factor = 1.0f;     // multiplies RoPE's cos/sin (LongRoPE's attention factor)
    int n_ctx_orig = 0;                // rope.scaling.original_context_length (else n_ctx_train)
    float rope_freq_scale_swa = 1.0f;  // sliding-window layers
    // YaRN (rope.scaling.type yarn): ext_factor 1 mixes interpolated and extrapolated angles
    // per dim; rope_attn_factor then also holds YaRN's magnitude scaling as llama.cpp derives it.
    float rope_ext_factor = 0.0f;      // 0 = plain RoPE
    float attn_scale = 0.0f;           // 0 -> 1/sqrt(n_embd_head_k)
    float attn_softcap = 0.0f;         // 0 = off; else scores = cap * tanh(scores / cap)
    float final_softcap = 0.0f;        // 0 = off; else logits = cap * tanh(logits / cap)
    int n_swa = 0;                     // sliding window in positions; 0 = none
    std::vector<uint8_t> layer_is_swa; // [n_layer]
    // mixture of experts (0 experts = dense FFN)
    int n_expert = 0;
    int n_expert_used = 0;            // top-k experts per token
    int n_ff_exp = 0;                 // hidden size of one expert
    bool expert_weights_norm = false; // renormalise the k selected weights to sum 1

    int n_embd_k_gqa() const { return n_embd_head_k * n_head_kv; }
    int n_embd_v_gqa() const { return n_embd_head_v * n_head_kv; }
};

struct LayerWeights {
    ggml_tensor* attn_norm = nullptr;       // [n_embd]
    ggml_tensor* wqkv = nullptr;            // [n_embd, (n_head + 2*n_head_kv)*hd] fused (phi3), else:
    ggml_tensor* wq = nullptr;              // [n_embd, n_head*hd_k]
    ggml_tensor* wk = nullptr;              // [n_embd, n_head_kv*hd_k]
    ggml_tensor* wv = nullptr;              // [n_embd, n_head_kv*hd_v]
    ggml_tensor* wo = nullptr;              // [n_head*hd_v, n_embd]
    ggml_tensor* bq = nullptr;              // [n_head*hd_k] (qwen2, gpt-oss; optional)
    ggml_tensor* bk = nullptr;              // [n_head_kv*hd_k]
    ggml_tensor* bv = nullptr;              // [n_head_kv*hd_v]
    ggml_tensor* bo = nullptr;              // [n_embd] (gpt-oss)
    ggml_tensor* attn_sinks = nullptr;      // [n_head] F32 (gpt-oss)
    ggml_tensor* q_norm = nullptr;          // [hd_k] (gemma3, qwen3)
    ggml_tensor* k_norm = nullptr;          // [hd_k] (gemma3, qwen3)
    ggml_tensor* post_attn_norm = nullptr;  // [n_embd] (gemma3; gpt-oss: the FFN's pre-norm)
    ggml_tensor* ffn_norm = nullptr;        // [n_embd]
    ggml_tensor* ffn_gate = nullptr;        // [n_embd, n_ff]; null when ffn_up is fused (phi3)
    ggml_tensor* ffn_up = nullptr;          // [n_embd, n_ff], or [n_embd, 2*n_ff] = gate then up
    ggml_tensor* ffn_down = nullptr;        // [n_ff, n_embd]
    ggml_tensor* post_ffn_norm = nullptr;   // [n_embd] (gemma3)
    // mixture of experts: router, experts stacked on the last axis, optional biases (gpt-oss)
    ggml_tensor* ffn_gate_inp = nullptr;    // [n_embd, n_expert]
    ggml_tensor* ffn_gate_inp_b = nullptr;  // [n_expert]
    ggml_tensor* ffn_gate_exps = nullptr;   // [n_embd, n_ff_exp, n_expert]
    ggml_tensor* ffn_up_exps = nullptr;     // [n_embd, n_ff_exp, n_expert]
    ggml_tensor* ffn_down_exps = nullptr;   // [n_ff_exp, n_embd, n_expert]
    ggml_tensor* ffn_gate_exps_b = nullptr; // [n_ff_exp, n_expert]
    ggml_tensor* ffn_up_exps_b = nullptr;   // [n_ff_exp, n_expert]
    ggml_tensor* ffn_down_exps_b = nullptr; // [n_embd, n_expert]
};

struct Model {
    std::unique_ptr<GgufFile> file;
    const ArchDef* arch = nullptr;
    std::string arch_name;
    HParams hp;

    ggml_tensor* tok_embd = nullptr;     // [n_embd, n_vocab]
    ggml_tensor* output_norm = nullptr;  // [n_embd]
    ggml_tensor* output = nullptr;       // [n_embd, n_vocab]; == tok_embd when tied
    std::vector<LayerWeights> layers;
    // RoPE frequency factors [n_rot/2] (each pair's angle is divided by its factor), shared by
    // every layer: rope_freqs (Llama 3.1+), or LongRoPE's long/short pair (phi3). All optional.
    ggml_tensor* rope_freqs = nullptr;
    ggml_tensor* rope_long = nullptr;
    ggml_tensor* rope_short = nullptr;

    ggml_backend_dev_t device = nullptr;  // where weights live and graphs run
    std::vector<ggml_backend_buffer_t> weights_bufs;  // one per buffer type used
    uint64_t weights_bytes = 0;
    bool repack = false;
    int n_repacked = 0;  // weights held in a CPU repacking buffer type
    uint64_t n_params = 0;

    // repack: put weights the CPU backend can repack (Q4_0, Q4_K, ... in this ggml) in its
    // repacking buffer type: faster matmuls, but their batched kernels round differently from
    // the one-row ones, so a sequence's logits then depend on what shares its batch.
    // device: a ggml device name ("CPU", "CUDA0", ... as ggml_backend_dev_name gives it); empty =
    // $LANNER_DEVICE=cpu forces the CPU, else the first GPU device, else the CPU.
    explicit Model(const std::string& path, bool repack = false,
                   const std::string& device = "");  // throws ModelLoadError
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    // Weight lookup for ArchDef::load: `need` fails with the tensor's name, `opt` may return null.
    // ne: expected shape (ggml order, fastest first); -1 entries are not checked.
    ggml_tensor* need(const std::string& name, std::vector<int64_t> ne) const;
    ggml_tensor* opt(const std::string& name, std::vector<int64_t> ne) const;
    std::string key(const std::string& suffix) const { return arch_name + "." + suffix; }

    // Shared pieces of ArchDef::load.
    // Sizes, eps, RoPE base and linear RoPE scaling from the usual <arch>.* keys (defaults for
    // the optional ones), checked for sanity (else ModelLoadError).
    void read_base_hparams(int n_ctx_train, float rms_eps, float rope_base);
    // attention.key_length (default n_embd / n_head), attention.value_length (default the key
    // length), rope.dimension_count (default the key length)
    void read_head_dims();
    void check_head_dims() const;  // sane n_embd/n_layer/n_head/n_head_kv/n_ff, else ModelLoadError
    void bind_common();            // token_embd, output_norm, output (tied if absent); sizes layers
    void bind_attention(int il, LayerWeights& w);  // attn_norm, q/k/v/o
    void bind_ffn(int il, LayerWeights& w);        // ffn_norm, gate/up/down
    void bind_rope_factors();                      // rope_freqs, rope_factors_{long,short} if present
    void bind_qkv_biases(int il, LayerWeights& w, bool required);  // attn_{q,k,v}.bias
    // MoE hparams (expert_count, expert_used_count, expert_feed_forward_length), checked
    void read_moe_hparams();
    // ffn_gate_inp + ffn_{gate,up,down}_exps (+ their .bias when `biases`), shape-checked
    void bind_moe(int il, LayerWeights& w, bool biases);

  private:
    void read_yarn(float factor);
    void choose_device(const std::string& wanted);
    void load_weights();
    std::vector<ggml_tensor*> matmul_only_weights() const;
    ggml_backend_buffer_type_t repack_buft_for(ggml_tensor* w) const;  // null: keep in the device buffer
};

// madvise(MADV_HUGEPAGE) over [base, base + size)'s 2 MiB-aligned interior (see model.cpp).
void advise_huge_pages(void* base, size_t size);

}  // namespace lanner
