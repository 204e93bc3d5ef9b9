// Model: open GGUF -> arch table -> hparams + weights -> device buffer.
#include "model.h"

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "arch.h"
#include "error.h"

namespace lanner {

static std::string shape_str(const ggml_tensor* t) {
    std::string s = "[";
    for (int i = 0; i < ggml_n_dims(t); ++i) s += (i ? ", " : "") + std::to_string(t->ne[i]);
    return s + "]";
}

Model::Model(const std::string& path) : file(std::make_unique<GgufFile>(path)) {
    arch_name = file->get_str("general.architecture");
    arch = arch_find(arch_name);
    if (!arch)
        file->fail("unsupported architecture '" + arch_name + "' (supported: " + arch_supported_list() + ")");
    arch->load(*this);  // hparams + weight binding (shape-checked)
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t))
        n_params += (uint64_t)ggml_nelements(t);
    choose_device();
    load_weights();
}

Model::~Model() {
    if (weights_buf) ggml_backend_buffer_free(weights_buf);
}

ggml_tensor* Model::opt(const std::string& name, std::vector<int64_t> ne) const {
    ggml_tensor* t = file->tensor(name);
    if (!t) return nullptr;
    bool ok = true;
    for (size_t i = 0; i < 4; ++i) {
        int64_t want = i < ne.size() ? ne[i] : 1;
        if (want >= 0 && t->ne[i] != want) ok = false;
    }
    if (!ok) {
        std::string w = "[";
        for (size_t i = 0; i < ne.size(); ++i) w += (i ? ", " : "") + std::to_string(ne[i]);
        file->fail("tensor '" + name + "' has shape " + shape_str(t) + ", expected " + w + "]");
    }
    return t;
}

ggml_tensor* Model::need(const std::string& name, std::vector<int64_t> ne) const {
    ggml_tensor* t = opt(name, ne);
    if (!t) file->fail("missing required tensor '" + name + "' for architecture " + arch_name);
    return t;
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
    if (f.get_str(key("rope.scaling.type"), "none") == "linear")
        hp.rope_freq_scale = 1.0f / (float)f.get_float(key("rope.scaling.factor"), 1.0);
    check_head_dims();
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

void Model::choose_device() {
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

void Model::load_weights() {
    ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(device);
    weights_buf = ggml_backend_alloc_ctx_tensors_from_buft(file->meta, buft);
    if (!weights_buf) file->fail("could not allocate the weight buffer on " + std::string(ggml_backend_dev_name(device)));
    ggml_backend_buffer_set_usage(weights_buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

    int fd = ::open(file->path.c_str(), O_RDONLY);
    if (fd < 0) file->fail("cannot reopen for reading");
    const bool host = ggml_backend_buffer_is_host(weights_buf);
    std::vector<uint8_t> staging;
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t)) {
        const size_t nbytes = ggml_nbytes(t);
        uint64_t off = file->tensor_file_offset(t->name);
        uint8_t* dst = (uint8_t*)t->data;
        if (!host) { staging.resize(nbytes); dst = staging.data(); }
        size_t done = 0;
        while (done < nbytes) {
            ssize_t r = ::pread(fd, dst + done, nbytes - done, (off_t)(off + done));
            if (r <= 0) { ::close(fd); file->fail(std::string("short read of tensor '") + t->name + "'"); }
            done += (size_t)r;
        }
        if (!host) ggml_backend_tensor_set(t, staging.data(), 0, nbytes);
    }
    ::close(fd);
}

}  // namespace lanner
