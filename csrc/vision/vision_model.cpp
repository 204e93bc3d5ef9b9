// VisionModel: open mmproj GGUF -> projector table -> hparams + weights -> device buffer;
// VisionEncoder: pixels -> graph -> embeddings.
#include "vision_model.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <thread>
#include <unistd.h>

#include "error.h"
#include "ggml-alloc.h"
#include "ggml-cpu.h"

namespace lanner {

// ---- the projector table ----------------------------------------------------------------------

static const ProjectorDef k_projectors[] = {
    {"gemma3", gemma3_proj_load, gemma3_proj_n_tokens, gemma3_proj_build},
    {"mlp", mlp_proj_load, mlp_proj_n_tokens, mlp_proj_build},
};

const ProjectorDef* projector_find(const std::string& name) {
    for (const auto& p : k_projectors)
        if (name == p.name) return &p;
    return nullptr;
}

std::string projector_supported_list() {
    std::string s;
    for (const auto& p : k_projectors) s += (s.empty() ? "" : ", ") + std::string(p.name);
    return s;
}

// ---- load -------------------------------------------------------------------------------------

VisionModel::VisionModel(const std::string& path, const std::string& device_name)
    : file(std::make_unique<GgufFile>(path)) {
    if (!file->get_bool("clip.has_vision_encoder", false)) file->fail("not a vision projector (clip.has_vision_encoder is not true)");
    proj_name = file->get_str("clip.vision.projector_type", file->get_str("clip.projector_type", ""));
    proj = projector_find(proj_name);
    if (!proj)
        file->fail("unsupported projector type '" + proj_name + "' (supported: " + projector_supported_list() + ")");
    read_hparams();
    bind_encoder();
    proj->load(*this);
    choose_device(device_name);
    load_weights();
}

VisionModel::~VisionModel() {
    if (weights_buf) ggml_backend_buffer_free(weights_buf);
}

ggml_tensor* VisionModel::opt(const std::string& name, std::vector<int64_t> ne) const {
    return file->tensor_shaped(name, ne);
}

ggml_tensor* VisionModel::need(const std::string& name, std::vector<int64_t> ne) const {
    ggml_tensor* t = opt(name, ne);
    if (!t) file->fail("missing required tensor '" + name + "' for projector " + proj_name);
    return t;
}

static void read_f32_triplet(const GgufFile& f, const char* key, float out[3]) {
    const int64_t id = gguf_find_key(f.gguf, key);
    if (id < 0) return;  // keep the default
    if (gguf_get_kv_type(f.gguf, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(f.gguf, id) != GGUF_TYPE_FLOAT32 ||
        gguf_get_arr_n(f.gguf, id) < 3)
        f.fail(std::string("metadata '") + key + "' must be an array of 3 float32");
    const float* d = (const float*)gguf_get_arr_data(f.gguf, id);
    for (int i = 0; i < 3; ++i) out[i] = d[i];
}

void VisionModel::read_hparams() {
    auto& f = *file;
    hp.image_size = (int)f.get_int("clip.vision.image_size");
    hp.patch_size = (int)f.get_int("clip.vision.patch_size");
    hp.n_embd = (int)f.get_int("clip.vision.embedding_length");
    hp.n_ff = (int)f.get_int("clip.vision.feed_forward_length");
    hp.n_layer = (int)f.get_int("clip.vision.block_count");
    hp.n_head = (int)f.get_int("clip.vision.attention.head_count");
    hp.n_embd_out = (int)f.get_int("clip.vision.projection_dim", 0);
    hp.eps = (float)f.get_float("clip.vision.attention.layer_norm_epsilon", 1e-6);
    hp.gelu = f.get_bool("clip.use_gelu", false);
    read_f32_triplet(f, "clip.vision.image_mean", hp.image_mean);
    read_f32_triplet(f, "clip.vision.image_std", hp.image_std);
    auto bad = [&](const std::string& what) { f.fail("bad hyperparameters: " + what); };
    if (hp.image_size <= 0 || hp.image_size > 8192) bad("image_size = " + std::to_string(hp.image_size));
    if (hp.patch_size <= 0 || hp.image_size % hp.patch_size) bad("patch_size = " + std::to_string(hp.patch_size) + " does not divide image_size");
    if (hp.n_embd <= 0 || hp.n_embd > (1 << 16)) bad("embedding_length = " + std::to_string(hp.n_embd));
    if (hp.n_ff <= 0 || hp.n_ff > (1 << 20)) bad("feed_forward_length = " + std::to_string(hp.n_ff));
    if (hp.n_layer <= 0 || hp.n_layer > 1024) bad("block_count = " + std::to_string(hp.n_layer));
    if (hp.n_head <= 0 || hp.n_embd % hp.n_head) bad("head_count = " + std::to_string(hp.n_head) + " does not divide embedding_length");
    for (int i = 0; i < 3; ++i)
        if (!(hp.image_std[i] > 0.0f)) bad("image_std must be > 0");
}

void VisionModel::bind_encoder() {
    const int64_t d = hp.n_embd, ff = hp.n_ff, p = hp.patch_size;
    patch_w = need("v.patch_embd.weight", {p, p, 3, d});
    patch_b = opt("v.patch_embd.bias", {d});
    class_embd = opt("v.class_embd", {d});
    const int64_t n_pos = (int64_t)hp.n_patches_side() * hp.n_patches_side() + (class_embd ? 1 : 0);
    pos_embd = need("v.position_embd.weight", {d, n_pos});
    pre_ln_w = opt("v.pre_ln.weight", {d});
    pre_ln_b = opt("v.pre_ln.bias", {d});
    post_ln_w = opt("v.post_ln.weight", {d});
    post_ln_b = opt("v.post_ln.bias", {d});
    layers.assign(hp.n_layer, VisionLayer{});
    for (int il = 0; il < hp.n_layer; ++il) {
        auto& l = layers[il];
        const std::string s = "v.blk." + std::to_string(il) + ".";
        l.ln1_w = need(s + "ln1.weight", {d});
        l.ln1_b = opt(s + "ln1.bias", {d});
        l.q_w = need(s + "attn_q.weight", {d, d});
        l.k_w = need(s + "attn_k.weight", {d, d});
        l.v_w = need(s + "attn_v.weight", {d, d});
        l.o_w = need(s + "attn_out.weight", {d, d});
        l.q_b = opt(s + "attn_q.bias", {d});
        l.k_b = opt(s + "attn_k.bias", {d});
        l.v_b = opt(s + "attn_v.bias", {d});
        l.o_b = opt(s + "attn_out.bias", {d});
        l.ln2_w = need(s + "ln2.weight", {d});
        l.ln2_b = opt(s + "ln2.bias", {d});
        // some converters wrote up/down swapped; the shapes tell them apart (n_ff != n_embd)
        ggml_tensor* up = file->tensor(s + "ffn_up.weight");
        const bool swapped = up && ff != d && up->ne[0] == ff && up->ne[1] == d;
        const std::string up_n = swapped ? "ffn_down" : "ffn_up", down_n = swapped ? "ffn_up" : "ffn_down";
        l.up_w = need(s + up_n + ".weight", {d, ff});
        l.up_b = opt(s + up_n + ".bias", {ff});
        l.down_w = need(s + down_n + ".weight", {ff, d});
        l.down_b = opt(s + down_n + ".bias", {d});
    }
}

void VisionModel::choose_device(const std::string& wanted) {
    if (!wanted.empty()) {
        device = ggml_backend_dev_by_name(wanted.c_str());
        if (!device) throw ModelLoadError("ggml has no device named '" + wanted + "' in this build");
        return;
    }
    const char* want = std::getenv("LANNER_DEVICE");
    if (!(want && std::strcmp(want, "cpu") == 0)) {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dv = ggml_backend_dev_get(i);
            if (ggml_backend_dev_type(dv) == GGML_BACKEND_DEVICE_TYPE_GPU) { device = dv; return; }
        }
    }
    device = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!device) throw ModelLoadError("ggml has no CPU backend registered");
}

// Every tensor of the file into one device buffer, read straight from the file.
void VisionModel::load_weights() {
    ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(device);
    const size_t align = ggml_backend_buft_get_alignment(buft);
    size_t size = 0;
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t))
        size += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), align);
    weights_buf = ggml_backend_buft_alloc_buffer(buft, size);
    if (!weights_buf) file->fail("could not allocate " + std::to_string(size) + " bytes of weights");
    weights_bytes = size;
    ggml_backend_buffer_set_usage(weights_buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    ggml_tallocr talloc = ggml_tallocr_new(weights_buf);
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t))
        if (ggml_tallocr_alloc(&talloc, t) != GGML_STATUS_SUCCESS) file->fail(std::string("could not place tensor '") + t->name + "'");
    int fd = ::open(file->path.c_str(), O_RDONLY);
    if (fd < 0) file->fail("cannot reopen for reading");
    std::vector<uint8_t> staging;
    for (ggml_tensor* t = ggml_get_first_tensor(file->meta); t; t = ggml_get_next_tensor(file->meta, t)) {
        const size_t nbytes = ggml_nbytes(t);
        const uint64_t off = file->tensor_file_offset(t->name);
        staging.resize(nbytes);
        size_t done = 0;
        while (done < nbytes) {
            ssize_t r = ::pread(fd, staging.data() + done, nbytes - done, (off_t)(off + done));
            if (r <= 0) { ::close(fd); file->fail(std::string("short read of tensor '") + t->name + "'"); }
            done += (size_t)r;
        }
        ggml_backend_tensor_set(t, staging.data(), 0, nbytes);
    }
    ::close(fd);
}

// ---- encode -----------------------------------------------------------------------------------

constexpr size_t k_vision_graph_size = 4096;

VisionEncoder::VisionEncoder(std::shared_ptr<VisionModel> m, int n_threads) : model_(std::move(m)) {
    backend_ = ggml_backend_dev_init(model_->device, nullptr);
    if (!backend_) throw std::runtime_error("could not initialise the ggml backend for the vision encoder");
    backend_cpu_ = ggml_backend_dev_type(model_->device) == GGML_BACKEND_DEVICE_TYPE_CPU
                       ? backend_ : ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    set_n_threads(n_threads);
    std::vector<ggml_backend_t> backends{backend_};
    if (backend_cpu_ != backend_) backends.push_back(backend_cpu_);
    sched_ = ggml_backend_sched_new(backends.data(), nullptr, (int)backends.size(), k_vision_graph_size, false, true);

    meta_.resize(ggml_tensor_overhead() * k_vision_graph_size + ggml_graph_overhead_custom(k_vision_graph_size, false));
    ggml_init_params ip{meta_.size(), meta_.data(), /*no_alloc=*/true};
    ctx_ = ggml_init(ip);
    gf_ = ggml_new_graph_custom(ctx_, k_vision_graph_size, false);
    const int64_t s = model_->hp.image_size;
    pixels_ = ggml_new_tensor_3d(ctx_, GGML_TYPE_F32, s, s, 3);  // [x, y, channel]
    ggml_set_name(pixels_, "inp_pixels");
    ggml_set_input(pixels_);
    VisionBuild b{ctx_, gf_, *model_, pixels_};
    out_ = model_->proj->build(b);  // [n_embd_out, n_tokens]
    ggml_set_output(out_);
    ggml_build_forward_expand(gf_, out_);
    if (out_->ne[0] != model_->hp.n_embd_out || out_->ne[1] != model_->n_tokens())
        throw std::runtime_error("vision graph output shape does not match the projector's");
}

VisionEncoder::~VisionEncoder() {
    if (ctx_) ggml_free(ctx_);
    if (sched_) ggml_backend_sched_free(sched_);
    if (backend_cpu_ && backend_cpu_ != backend_) ggml_backend_free(backend_cpu_);
    if (backend_) ggml_backend_free(backend_);
    if (threadpool_) ggml_threadpool_free(threadpool_);
}

void VisionEncoder::set_n_threads(int n) {
    if (n <= 0) n = (int)std::max(1u, std::thread::hardware_concurrency());
    ggml_backend_cpu_set_n_threads(backend_cpu_, n);
    ggml_threadpool_params tp = ggml_threadpool_params_default(n);
    tp.poll = 0;
    ggml_threadpool_t pool = ggml_threadpool_new(&tp);
    if (!pool) throw std::runtime_error("could not start " + std::to_string(n) + " CPU threads");
    ggml_backend_cpu_set_threadpool(backend_cpu_, pool);
    if (threadpool_) ggml_threadpool_free(threadpool_);
    threadpool_ = pool;
}

void VisionEncoder::encode(const float* pixels, float* out) {
    if (!allocated_) {
        ggml_backend_sched_reset(sched_);
        if (!ggml_backend_sched_alloc_graph(sched_, gf_)) throw DecodeError("could not allocate the vision graph");
        allocated_ = true;
    }
    ggml_backend_tensor_set(pixels_, pixels, 0, ggml_nbytes(pixels_));
    const ggml_status st = ggml_backend_sched_graph_compute(sched_, gf_);
    if (st != GGML_STATUS_SUCCESS) {
        allocated_ = false;
        throw DecodeError("vision graph compute failed (ggml status " + std::to_string((int)st) + ")");
    }
    ggml_backend_tensor_get(out_, out, 0, ggml_nbytes(out_));
}

}  // namespace lanner
