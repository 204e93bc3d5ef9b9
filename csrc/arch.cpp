// The architecture table: one row per supported `general.architecture`.
#include "arch.h"

#include "ggml.h"

namespace lanner {

static const ArchDef k_archs[] = {
    {"llama", llama_load, llama_build},
    {"gemma3", gemma3_load, gemma3_build},
    {"gemma2", gemma2_load, gemma2_build},
    {"phi3", phi3_load, phi3_build},
    {"qwen2", qwen2_load, qwen2_build},
    {"qwen3", qwen3_load, qwen3_build},
    {"qwen3moe", qwen3moe_load, qwen3moe_build},
    {"gpt-oss", gpt_oss_load, gpt_oss_build},
};

const ArchDef* arch_find(const std::string& name) {
    for (const auto& a : k_archs)
        if (name == a.name) return &a;
    return nullptr;
}

std::string arch_supported_list() {
    std::string s;
    for (const auto& a : k_archs) s += (s.empty() ? "" : ", ") + std::string(a.name);
    return s;
}

}  // namespace lanner
