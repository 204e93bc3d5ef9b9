// VisionModel: one multimodal projector GGUF (llama.cpp's `mmproj` layout: `clip.*` metadata,
// `v.*` encoder and `mm.*` projector tensors), resident on a ggml device; VisionEncoder runs it.
// Owns the GgufFile, the weight buffer and (the encoder) its own backend + scheduler, so it can
// encode on another thread than the text Context's. A projector type is one file in vision/
// (`{name, load, build}` rows, like the architecture table). Knows pixels and embeddings only:
// no image decoding, no tokens (Python preprocesses; the text Context takes the rows).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf_file.h"

namespace lanner {

struct VisionModel;

struct VisionHParams {
    int image_size = 0;   // pixels per side of the encoder's input (square)
    int patch_size = 0;   // pixels per side of one patch
    int n_embd = 0;       // encoder width
    int n_ff = 0;
    int n_layer = 0;      // encoder blocks present in the file
    int n_head = 0;
    int n_embd_out = 0;   // projector output = the text model's n_embd
    int n_merge = 1;      // gemma3: avg-pool kernel (patches per side / n_merge per side out)
    float eps = 1e-6f;    // LayerNorm epsilon
    bool gelu = true;     // FFN activation: GELU (tanh) if set, else quick GELU
    float image_mean[3] = {0.5f, 0.5f, 0.5f};
    float image_std[3] = {0.5f, 0.5f, 0.5f};
    int n_patches_side() const { return image_size / patch_size; }
};

struct VisionLayer {
    ggml_tensor *ln1_w = nullptr, *ln1_b = nullptr;  // [n_embd]
    ggml_tensor *q_w = nullptr, *q_b = nullptr;      // [n_embd, n_embd], [n_embd]
    ggml_tensor *k_w = nullptr, *k_b = nullptr;
    ggml_tensor *v_w = nullptr, *v_b = nullptr;
    ggml_tensor *o_w = nullptr, *o_b = nullptr;
    ggml_tensor *ln2_w = nullptr, *ln2_b = nullptr;
    ggml_tensor *up_w = nullptr, *up_b = nullptr;      // [n_embd, n_ff], [n_ff]
    ggml_tensor *down_w = nullptr, *down_b = nullptr;  // [n_ff, n_embd], [n_embd]
};

struct VisionBuild {
    ggml_context* ctx;
    ggml_cgraph* gf;
    const VisionModel& m;
    ggml_tensor* pixels;  // F32 [image_size, image_size, 3]: planar RGB, normalised
};

struct ProjectorDef {
    const char* name;                             // clip.projector_type
    void (*load)(VisionModel& m);                 // projector hparams + tensors (shape-checked)
    int (*n_tokens)(const VisionModel& m);        // embeddings rows per image
    ggml_tensor* (*build)(VisionBuild& b);       // pixels -> [n_embd_out, n_tokens]
};

struct VisionModel {
    std::unique_ptr<GgufFile> file;
    const ProjectorDef* proj = nullptr;
    std::string proj_name;
    VisionHParams hp;

    ggml_tensor* patch_w = nullptr;  // [patch, patch, 3, n_embd]
    ggml_tensor* patch_b = nullptr;  // [n_embd] (optional)
    ggml_tensor* class_embd = nullptr;  // [n_embd] (optional: CLIP's class token)
    ggml_tensor* pos_embd = nullptr;    // [n_embd, n_pos]
    ggml_tensor *pre_ln_w = nullptr, *pre_ln_b = nullptr;    // optional
    ggml_tensor *post_ln_w = nullptr, *post_ln_b = nullptr;  // optional
    std::vector<VisionLayer> layers;
    // projector tensors (which are set depends on the type)
    ggml_tensor* mm_input_proj = nullptr;  // gemma3: [n_embd_out, n_embd]
    ggml_tensor* mm_soft_norm = nullptr;   // gemma3: [n_embd]
    ggml_tensor *mm_0_w = nullptr, *mm_0_b = nullptr;  // mlp: [n_embd, n_hidden], [n_hidden]
    ggml_tensor *mm_2_w = nullptr, *mm_2_b = nullptr;  // mlp: [n_hidden, n_embd_out], [n_embd_out]

    ggml_backend_dev_t device = nullptr;
    ggml_backend_buffer_t weights_buf = nullptr;
    uint64_t weights_bytes = 0;

    // device: a ggml device name, or empty = the same rule as Model (LANNER_DEVICE=cpu, else the
    // first GPU, else the CPU). Throws ModelLoadError naming the file and what is wrong.
    explicit VisionModel(const std::string& path, const std::string& device = "");
    ~VisionModel();
    VisionModel(const VisionModel&) = delete;
    VisionModel& operator=(const VisionModel&) = delete;

    int n_tokens() const { return proj->n_tokens(*this); }
    ggml_tensor* need(const std::string& name, std::vector<int64_t> ne) const;
    ggml_tensor* opt(const std::string& name, std::vector<int64_t> ne) const;

  private:
    void read_hparams();
    void bind_encoder();
    void choose_device(const std::string& wanted);
    void load_weights();
};

// One encode at a time per encoder (not thread-safe); separate from any text Context.
class VisionEncoder {
  public:
    VisionEncoder(std::shared_ptr<VisionModel> m, int n_threads = 0);
    ~VisionEncoder();
    VisionEncoder(const VisionEncoder&) = delete;
    VisionEncoder& operator=(const VisionEncoder&) = delete;

    // pixels: [3][image_size][image_size] planar RGB, already normalised with image_mean/std.
    // out: [n_tokens][n_embd_out] row-major. Throws DecodeError if the graph fails.
    void encode(const float* pixels, float* out);
    const VisionModel& model() const { return *model_; }
    void set_n_threads(int n);

  private:
    std::shared_ptr<VisionModel> model_;
    ggml_backend_t backend_ = nullptr;
    ggml_backend_t backend_cpu_ = nullptr;
    ggml_backend_sched_t sched_ = nullptr;
    ggml_threadpool_t threadpool_ = nullptr;
    std::vector<uint8_t> meta_;
    ggml_context* ctx_ = nullptr;  // the graph, built once (the input shape never changes)
    ggml_cgraph* gf_ = nullptr;
    ggml_tensor* pixels_ = nullptr;
    ggml_tensor* out_ = nullptr;
    bool allocated_ = false;
};

// vision/vit.cpp: the encoder blocks shared by the projector types.
// LayerNorm with optional weight/bias; x: [n, ...]
ggml_tensor* vit_norm(VisionBuild& b, ggml_tensor* x, ggml_tensor* w, ggml_tensor* bias);
// pixels -> patch embeddings (+ bias): [n_embd, n_patches], patches in row-major order
ggml_tensor* vit_patch_embd(VisionBuild& b);
// the pre-norm blocks [0, n_layer) over x: [n_embd, n_pos], non-causal attention
ggml_tensor* vit_blocks(VisionBuild& b, ggml_tensor* x, int n_layer);
ggml_tensor* vit_gelu(VisionBuild& b, ggml_tensor* x);  // the model's FFN activation

// the projector table (vision/projectors.cpp)
const ProjectorDef* projector_find(const std::string& name);
std::string projector_supported_list();

// vision/gemma3.cpp, vision/llava_mlp.cpp
void gemma3_proj_load(VisionModel& m);
int gemma3_proj_n_tokens(const VisionModel& m);
ggml_tensor* gemma3_proj_build(VisionBuild& b);
void mlp_proj_load(VisionModel& m);
int mlp_proj_n_tokens(const VisionModel& m);
ggml_tensor* mlp_proj_build(VisionBuild& b);

}  // namespace lanner
