// ArchDef: the table row that makes an architecture. Adding one = a file in models/ that
// defines its load + build functions, plus a row in arch.cpp.
#pragma once
#include <string>

#include "ggml.h"

namespace lanner {

struct Model;
struct GraphBuild;

struct ArchDef {
    const char* name;                       // general.architecture
    void (*load)(Model& m);                 // read hparams, bind + shape-check weights
    ggml_tensor* (*build)(GraphBuild& b);  // one ubatch -> logits [n_vocab, n_outputs]
};

const ArchDef* arch_find(const std::string& name);  // nullptr if unsupported
std::string arch_supported_list();                  // "llama, gemma3"

// models/<arch>.cpp
void llama_load(Model& m);
ggml_tensor* llama_build(GraphBuild& b);
void gemma3_load(Model& m);
ggml_tensor* gemma3_build(GraphBuild& b);
void gemma2_load(Model& m);
ggml_tensor* gemma2_build(GraphBuild& b);
void phi3_load(Model& m);
ggml_tensor* phi3_build(GraphBuild& b);
void qwen2_load(Model& m);
ggml_tensor* qwen2_build(GraphBuild& b);
void qwen3_load(Model& m);
ggml_tensor* qwen3_build(GraphBuild& b);
void qwen3moe_load(Model& m);
ggml_tensor* qwen3moe_build(GraphBuild& b);
void gpt_oss_load(Model& m);
ggml_tensor* gpt_oss_build(GraphBuild& b);

}  // namespace lanner
