// Model: open GGUF -> arch table -> hparams + weights -> device buffer.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch.h"
#include "error.h"
#include "ggml-alloc.h"
#include "ggml-cpu.h"

namespace lanner {

Model::Model(const std::string& path, bool repack_, const std::string& device_name)
    : file(std::make_unique<GgufFile>(path)), repack(repack_) {
    arch_name = file->get_str("general.architecture");
    arch = arch_find(arch_name);
    if (!arch)
        file->fail("unsupported architecture '" + arch_name + "' (supported: " + arch_supported_list() + ")");
    arch->load(*this);  // hparams + weight binding (shape-checked)
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t))
        n_params += (uint64_t)ggml_nelements(t);
    choose_device(device_name);
    load_weights();
}

Model::~Model() {
    for (auto* b : weights_bufs) ggml_backend_buffer_free(b);
}

ggml_tensor* Model::opt(const std::string& name, std::vector<int64_t> ne) const {
    return file->tensor_shaped(name, ne);
}

ggml_tensor* Model::need(const std::string& name, std::vector<int64_t> ne) const {
    ggml_tensor* t = opt(name, ne);
    if (!t) file->fail("missing required tensor '" + name + "' for architecture " + arch_name);
    return t;
}

void Model::read_head_dims() {
    auto& f = *file;
    hp.n_embd_head_k = (int)f.get_int(key("attention.key_length"), hp.n_embd / hp.n_head);
    hp.n_embd_head_v = (int)f.get_int(key("attention.value_length"), hp.n_embd_head_k);
    hp.n_rot = (int)f.get_int(key("rope.dimension_count"), hp.n_embd_head_k);
}

void Model::read_base_hparams(int n_ctx_train, float rms_eps, float rope_base) {
    auto& f = *file;
    hp.n_embd = (int)f.get_int(key("embedding_length"));
    hp.n_layer = (int)f.get_int(key("block_count"));
    hp.n_head = (int)f.get_int(key("attention.head_count"));
    hp.n_head_kv = (int)f.get_int(key("attention.head_count_kv"), hp.n_head);
    hp.n_ff = (int)f.get_int(key("feed_forward_length"));
    hp.n_ctx_train = (int)f.get_int(key("context_length"), n_ctx_train);
    hp.rms_eps = (float)f.get_float(key("attention.layer_norm_rms_epsilon"), rms_eps);
    hp.rope_base = (float)f.get_float(key("rope.freq_base"), rope_base);
    const std::string scaling = f.get_str(key("rope.scaling.type"), "none");
    const float factor = (float)f.get_float(key("rope.scaling.factor"), 0.0);
    if ((scaling == "linear" || scaling == "yarn") && factor > 0.0f) hp.rope_freq_scale = 1.0f / factor;
    hp.n_ctx_orig = (int)f.get_int(key("rope.scaling.original_context_length"), hp.n_ctx_train);
    hp.rope_attn_factor = (float)f.get_float(key("rope.scaling.attn_factor"), 1.0);
    if (scaling == "yarn") read_yarn(factor);
    check_head_dims();
}

// YaRN as llama.cpp sets it up for these families: ext_factor 1; rope_attn_factor (already
// rope.scaling.attn_factor) times mscale / (1 + 0.1 ln f) with mscale = 1 + 0.1 ln f, so that
// ggml's own (1 + 0.1 ln f) on cos/sin leaves exactly the model's magnitude scaling.
void Model::read_yarn(float factor) {
    hp.rope_ext_factor = 1.0f;
    if (!(factor > 1.0f)) return;
    const float mscale = 0.1f * logf(factor) + 1.0f;
    hp.rope_attn_factor *= mscale / (1.0f + 0.1f * logf(factor));
}

void Model::check_head_dims() const {
    const auto& h = hp;
    auto bad = [&](const std::string& what) { file->fail("bad hyperparameters: " + what); };
    if (h.n_embd <= 0 || h.n_embd > (1 << 20)) bad("embedding_length = " + std::to_string(h.n_embd));
    if (h.n_layer <= 0 || h.n_layer > 4096) bad("block_count = " + std::to_string(h.n_layer));
    if (h.n_head <= 0 || h.n_head > 4096) bad("attention.head_count = " + std::to_string(h.n_head));
    if (h.n_head_kv <= 0 || h.n_head % h.n_head_kv != 0)
        bad("attention.head_count_kv = " + std::to_string(h.n_head_kv) + " does not divide head_count " +
            std::to_string(h.n_head));
    if (h.n_ff <= 0 || h.n_ff > (1 << 24)) bad("feed_forward_length = " + std::to_string(h.n_ff));
    if (h.n_ctx_train <= 0) bad("context_length = " + std::to_string(h.n_ctx_train));
}

void Model::bind_common() {
    tok_embd = need("token_embd.weight", {hp.n_embd, -1});
    hp.n_vocab = (int)tok_embd->ne[1];
    output_norm = need("output_norm.weight", {hp.n_embd});
    output = opt("output.weight", {hp.n_embd, hp.n_vocab});
    if (!output) output = tok_embd;  // tied embeddings
    layers.assign(hp.n_layer, LayerWeights{});
}

void Model::bind_attention(int il, LayerWeights& w) {
    if (hp.n_embd_head_k <= 0 || hp.n_embd_head_k > 4096 || hp.n_embd_head_v <= 0 || hp.n_embd_head_v > 4096)
        file->fail("bad hyperparameters: head dims " + std::to_string(hp.n_embd_head_k) + "/" +
                   std::to_string(hp.n_embd_head_v));
    if (hp.n_rot <= 0 || hp.n_rot > hp.n_embd_head_k || hp.n_rot % 2)
        file->fail("bad hyperparameters: rope.dimension_count = " + std::to_string(hp.n_rot));
    const std::string p = "blk." + std::to_string(il) + ".";
    const int64_t q_dim = (int64_t)hp.n_head * hp.n_embd_head_k;
    w.attn_norm = need(p + "attn_norm.weight", {hp.n_embd});
    w.wq = need(p + "attn_q.weight", {hp.n_embd, q_dim});
    w.wk = need(p + "attn_k.weight", {hp.n_embd, hp.n_embd_k_gqa()});
    w.wv = need(p + "attn_v.weight", {hp.n_embd, hp.n_embd_v_gqa()});
    w.wo = need(p + "attn_output.weight", {(int64_t)hp.n_head * hp.n_embd_head_v, hp.n_embd});
}

void Model::bind_ffn(int il, LayerWeights& w) {
    const std::string p = "blk." + std::to_string(il) + ".";
    w.ffn_norm = need(p + "ffn_norm.weight", {hp.n_embd});
    w.ffn_gate = need(p + "ffn_gate.weight", {hp.n_embd, hp.n_ff});
    w.ffn_up = need(p + "ffn_up.weight", {hp.n_embd, hp.n_ff});
    w.ffn_down = need(p + "ffn_down.weight", {hp.n_ff, hp.n_embd});
}

void Model::bind_rope_factors() {
    const int64_t n = hp.n_rot / 2;
    rope_freqs = opt("rope_freqs.weight", {n});
    rope_long = opt("rope_factors_long.weight", {n});
    rope_short = opt("rope_factors_short.weight", {n});
    for (ggml_tensor* t : {rope_freqs, rope_long, rope_short})
        if (t && t->type != GGML_TYPE_F32)
            file->fail(std::string("tensor '") + t->name + "' has type " + ggml_type_name(t->type) + ", expected f32");
    if ((rope_long == nullptr) != (rope_short == nullptr))
        file->fail("rope_factors_long and rope_factors_short must come together");
}

void Model::bind_qkv_biases(int il, LayerWeights& w, bool required) {
    const std::string p = "blk." + std::to_string(il) + ".";
    auto get = [&](const std::string& n, int64_t d) { return required ? need(p + n, {d}) : opt(p + n, {d}); };
    w.bq = get("attn_q.bias", (int64_t)hp.n_head * hp.n_embd_head_k);
    w.bk = get("attn_k.bias", hp.n_embd_k_gqa());
    w.bv = get("attn_v.bias", hp.n_embd_v_gqa());
}

void Model::read_moe_hparams() {
    auto& f = *file;
    hp.n_expert = (int)f.get_int(key("expert_count"), 0);
    hp.n_expert_used = (int)f.get_int(key("expert_used_count"), 0);
    if (hp.n_expert <= 0 || hp.n_expert > 512)
        file->fail("bad hyperparameters: expert_count = " + std::to_string(hp.n_expert));
    if (hp.n_expert_used <= 0 || hp.n_expert_used > hp.n_expert)
        file->fail("bad hyperparameters: expert_used_count = " + std::to_string(hp.n_expert_used) +
                   " (expert_count " + std::to_string(hp.n_expert) + ")");
    hp.n_ff_exp = (int)f.get_int(key("expert_feed_forward_length"), hp.n_ff / hp.n_expert_used);
    if (hp.n_ff_exp <= 0 || hp.n_ff_exp > (1 << 24))
        file->fail("bad hyperparameters: expert_feed_forward_length = " + std::to_string(hp.n_ff_exp));
}

void Model::bind_moe(int il, LayerWeights& w, bool biases) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const int64_t e = hp.n_expert, ff = hp.n_ff_exp, d = hp.n_embd;
    w.ffn_gate_inp = need(p + "ffn_gate_inp.weight", {d, e});
    w.ffn_gate_exps = need(p + "ffn_gate_exps.weight", {d, ff, e});
    w.ffn_up_exps = need(p + "ffn_up_exps.weight", {d, ff, e});
    w.ffn_down_exps = need(p + "ffn_down_exps.weight", {ff, d, e});
    if (!biases) return;
    w.ffn_gate_inp_b = need(p + "ffn_gate_inp.bias", {e});
    w.ffn_gate_exps_b = need(p + "ffn_gate_exps.bias", {ff, e});
    w.ffn_up_exps_b = need(p + "ffn_up_exps.bias", {ff, e});
    w.ffn_down_exps_b = need(p + "ffn_down_exps.bias", {d, e});
    for (ggml_tensor* t : {w.ffn_gate_inp_b, w.ffn_gate_exps_b, w.ffn_up_exps_b, w.ffn_down_exps_b})
        if (t->type != GGML_TYPE_F32) file->fail(std::string("tensor '") + t->name + "' must be F32");
}

void Model::choose_device(const std::string& wanted) {
    if (!wanted.empty()) {
        device = ggml_backend_dev_by_name(wanted.c_str());
        if (!device) throw ModelLoadError("ggml has no device named '" + wanted + "' in this build");
        return;
    }
    const char* want = std::getenv("LANNER_DEVICE");
    bool force_cpu = want && std::strcmp(want, "cpu") == 0;
    if (!force_cpu) {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            if (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_GPU) { device = d; return; }
        }
    }
    device = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!device) throw ModelLoadError("ggml has no CPU backend registered");
}

// Weights used only as the left operand of a matmul: candidates for a repacking buffer type.
// (token_embd is read by get_rows, which repacked layouts do not support.)
std::vector<ggml_tensor*> Model::matmul_only_weights() const {
    std::vector<ggml_tensor*> out;
    for (const auto& w : layers)
        for (ggml_tensor* t : {w.wqkv, w.wq, w.wk, w.wv, w.wo, w.ffn_gate, w.ffn_up, w.ffn_down})
            if (t) out.push_back(t);
    if (output && output != tok_embd) out.push_back(output);
    return out;
}

// The CPU backend offers "extra" buffer types that store some quant types interleaved for
// faster matmul kernels (CPU_REPACK: Q4_0, Q4_K, IQ4_NL, ... in this ggml). Ask the device
// whether a matmul with `w` in that buffer type is supported; the first that is wins.
ggml_backend_buffer_type_t Model::repack_buft_for(ggml_tensor* w) const {
    if (!repack || ggml_backend_dev_type(device) != GGML_BACKEND_DEVICE_TYPE_CPU) return nullptr;
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(device), "ggml_backend_dev_get_extra_bufts");
    if (!get_extra) return nullptr;
    for (ggml_backend_buffer_type_t* b = get_extra(device); b && *b; ++b) {
        ggml_init_params ip{ggml_tensor_overhead() * 4, nullptr, true};
        ggml_context* c = ggml_init(ip);
        ggml_tensor* wc = ggml_dup_tensor(c, w);
        ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(*b, 0);
        wc->buffer = probe;
        ggml_tensor* op = ggml_mul_mat(c, wc, ggml_new_tensor_2d(c, GGML_TYPE_F32, w->ne[0], 16));
        const bool ok = probe && ggml_backend_dev_supports_op(device, op);
        if (probe) ggml_backend_buffer_free(probe);
        ggml_free(c);
        if (ok) return *b;
    }
    return nullptr;
}

// Weights are read front to back once per decode step. With 4 KiB pages every page is a TLB
// miss and a restart of the hardware prefetcher; where transparent huge pages are "madvise"
// (Debian's default) ask for 2 MiB pages over the buffer's aligned interior before it is
// written: Gemma 3 270M decode +10% at 2 threads. LANNER_HUGE_PAGES=0 leaves 4 KiB pages.
void advise_huge_pages(void* base, size_t size) {
#ifdef MADV_HUGEPAGE
    const char* env = std::getenv("LANNER_HUGE_PAGES");
    if (env && std::strcmp(env, "0") == 0) return;
    const uintptr_t huge = (uintptr_t)2 << 20, b = (uintptr_t)base;
    const uintptr_t first = (b + huge - 1) & ~(huge - 1), last = (b + size) & ~(huge - 1);
    if (last > first) madvise((void*)first, last - first, MADV_HUGEPAGE);  // advice only: failure is harmless
#else
    (void)base, (void)size;
#endif
}

void Model::load_weights() {
    // 1. choose a buffer type per tensor
    ggml_backend_buffer_type_t dev_buft = ggml_backend_dev_buffer_type(device);
    std::vector<std::pair<ggml_backend_buffer_type_t, std::vector<ggml_tensor*>>> groups{{dev_buft, {}}};
    std::vector<ggml_tensor*> mm = matmul_only_weights();
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t)) {
        ggml_backend_buffer_type_t b = std::find(mm.begin(), mm.end(), t) != mm.end() ? repack_buft_for(t) : nullptr;
        if (!b) b = dev_buft;
        auto g = std::find_if(groups.begin(), groups.end(), [&](auto& e) { return e.first == b; });
        if (g == groups.end()) g = groups.insert(groups.end(), {b, {}});
        g->second.push_back(t);
        if (b != dev_buft) ++n_repacked;
    }
    // 2. one buffer per type, tensors placed in order
    for (auto& [b, tensors] : groups) {
        if (tensors.empty()) continue;
        const size_t align = ggml_backend_buft_get_alignment(b);
        size_t size = 0;
        for (ggml_tensor* t : tensors) size += GGML_PAD(ggml_backend_buft_get_alloc_size(b, t), align);
        ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(b, size);
        if (!buf) file->fail("could not allocate " + std::to_string(size) + " bytes of weights on " + ggml_backend_buft_name(b));
        if (ggml_backend_buffer_is_host(buf)) advise_huge_pages(ggml_backend_buffer_get_base(buf), size);
        weights_bufs.push_back(buf);
        weights_bytes += size;
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        ggml_tallocr talloc = ggml_tallocr_new(buf);
        for (ggml_tensor* t : tensors)
            if (ggml_tallocr_alloc(&talloc, t) != GGML_STATUS_SUCCESS) file->fail(std::string("could not place tensor '") + t->name + "'");
    }
    // 3. read the data: straight into host memory, else through set_tensor (which repacks)
    int fd = ::open(file->path.c_str(), O_RDONLY);
    if (fd < 0) file->fail("cannot reopen for reading");
    std::vector<uint8_t> staging;
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t)) {
        const size_t nbytes = ggml_nbytes(t);
        const uint64_t off = file->tensor_file_offset(t->name);
        const bool direct = ggml_backend_buffer_is_host(t->buffer) &&
                            ggml_backend_buffer_get_type(t->buffer) == dev_buft;
        uint8_t* dst = (uint8_t*)t->data;
        if (!direct) { staging.resize(nbytes); dst = staging.data(); }
        size_t done = 0;
        while (done < nbytes) {
            ssize_t r = ::pread(fd, dst + done, nbytes - done, (off_t)(off + done));
            if (r <= 0) { ::close(fd); file->fail(std::string("short read of tensor '") + t->name + "'"); }
            done += (size_t)r;
        }
        if (!direct) ggml_backend_tensor_set(t, staging.data(), 0, nbytes);
    }
    ::close(fd);
}

}  // namespace lanner
