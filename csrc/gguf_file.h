// GgufFile: one opened GGUF file, read through ggml's gguf API.
// Owns the gguf_context and the ggml context holding tensor descriptions (no data).
// Validates what ggml does not (tensor data inside the file, sane shapes) and offers typed
// getters that throw ModelLoadError naming the file and key. Knows nothing of architectures.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"

namespace lanner {

struct GgufFile {
    std::string path;
    gguf_context* gguf = nullptr;
    ggml_context* meta = nullptr;  // tensor descriptions, no_alloc
    uint64_t file_size = 0;        // bytes

    explicit GgufFile(const std::string& path);  // throws ModelLoadError
    ~GgufFile();
    GgufFile(const GgufFile&) = delete;
    GgufFile& operator=(const GgufFile&) = delete;

    [[noreturn]] void fail(const std::string& what) const;

    bool has(const std::string& key) const;
    std::string get_str(const std::string& key) const;
    std::string get_str(const std::string& key, const std::string& def) const;
    int64_t get_int(const std::string& key) const;             // any integer type
    int64_t get_int(const std::string& key, int64_t def) const;
    double get_float(const std::string& key, double def) const; // any float or integer type
    bool get_bool(const std::string& key, bool def) const;
    std::vector<int64_t> get_int_array(const std::string& key) const;  // empty if absent

    ggml_tensor* tensor(const std::string& name) const;  // nullptr if absent
    // The tensor `name` if present (nullptr if absent), its shape checked against `ne` (missing
    // trailing dims = 1, a negative entry = any); a mismatch fails naming both shapes.
    ggml_tensor* tensor_shaped(const std::string& name, const std::vector<int64_t>& ne) const;
    uint64_t tensor_file_offset(const std::string& name) const;  // absolute, bytes
    // Forget these keys (absent ones are skipped), freeing their values: the vocabulary tables
    // once the tokenizer is built (~13 MiB of strings for a 262k vocabulary). Returns how many.
    int remove_keys(const std::vector<std::string>& keys);
};

}  // namespace lanner
