// GgufFile: open + validate a GGUF file through ggml's gguf API; typed metadata getters.
#include "gguf_file.h"

#include <cstdio>
#include <mutex>
#include <sys/stat.h>

#include "error.h"

namespace lanner {

// ---- ggml log capture: gguf reports why a file is bad through ggml's logger -----------------

namespace {
std::mutex g_log_mu;  // ggml's logger is process-global; one capture at a time
std::string* g_log_sink = nullptr;

void capture_log(enum ggml_log_level level, const char* text, void*) {
    if (g_log_sink && (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN ||
                       level == GGML_LOG_LEVEL_CONT)) {
        g_log_sink->append(text);
    }
}

struct LogCapture {  // RAII: route ggml's log into `sink` while alive
    std::lock_guard<std::mutex> lock{g_log_mu};
    ggml_log_callback prev_cb = nullptr;
    void* prev_ud = nullptr;
    explicit LogCapture(std::string* sink) {
        ggml_log_get(&prev_cb, &prev_ud);
        g_log_sink = sink;
        ggml_log_set(capture_log, nullptr);
    }
    ~LogCapture() {
        ggml_log_set(prev_cb, prev_ud);
        g_log_sink = nullptr;
    }
};

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    for (auto& c : s) if (c == '\n') c = ';';
    return s;
}
}  // namespace

// ---- open + validate ------------------------------------------------------------------------

void GgufFile::fail(const std::string& what) const {
    throw ModelLoadError("invalid model file '" + path + "': " + what);
}

GgufFile::GgufFile(const std::string& p) : path(p) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) throw ModelLoadError("model file not found: '" + path + "'");
    if (!S_ISREG(st.st_mode)) fail("not a regular file");
    file_size = (uint64_t)st.st_size;
    if (file_size < 24) fail("file is " + std::to_string(file_size) + " bytes, too short for a GGUF header");
    {
        FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) throw ModelLoadError("cannot open model file '" + path + "'");
        char magic[4] = {0, 0, 0, 0};
        size_t n = std::fread(magic, 1, 4, f);
        std::fclose(f);
        if (n != 4 || magic[0] != 'G' || magic[1] != 'G' || magic[2] != 'U' || magic[3] != 'F')
            fail("not a GGUF file (bad magic)");
    }

    std::string log;
    {
        LogCapture cap(&log);
        gguf_init_params params{/*no_alloc=*/true, /*ctx=*/&meta};
        gguf = gguf_init_from_file(path.c_str(), params);
    }
    if (!gguf) fail(log.empty() ? "gguf header could not be parsed" : trim(log));

    // ggml checked types, dims and offsets against each other; check them against the file.
    const uint64_t data_off = gguf_get_data_offset(gguf);
    const int64_t n_tensors = gguf_get_n_tensors(gguf);
    for (int64_t i = 0; i < n_tensors; ++i) {
        const char* name = gguf_get_tensor_name(gguf, i);
        ggml_tensor* t = ggml_get_tensor(meta, name);
        if (!t) fail(std::string("tensor '") + name + "' missing from the tensor table");
        const uint64_t off = data_off + gguf_get_tensor_offset(gguf, i);
        const uint64_t nbytes = ggml_nbytes(t);
        if (off > file_size || nbytes > file_size - off)
            fail(std::string("tensor '") + name + "' data (offset " + std::to_string(off) + ", " +
                 std::to_string(nbytes) + " bytes) lies past the end of the file (" +
                 std::to_string(file_size) + " bytes): file truncated?");
    }
}

GgufFile::~GgufFile() {
    if (gguf) gguf_free(gguf);
    if (meta) ggml_free(meta);
}

// ---- typed getters ----------------------------------------------------------------------------

bool GgufFile::has(const std::string& key) const { return gguf_find_key(gguf, key.c_str()) >= 0; }

std::string GgufFile::get_str(const std::string& key) const {
    int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) fail("missing required key '" + key + "'");
    if (gguf_get_kv_type(gguf, id) != GGUF_TYPE_STRING)
        fail("key '" + key + "' has type " + gguf_type_name(gguf_get_kv_type(gguf, id)) + ", expected string");
    return gguf_get_val_str(gguf, id);
}

std::string GgufFile::get_str(const std::string& key, const std::string& def) const {
    return has(key) ? get_str(key) : def;
}

static bool read_int(const gguf_context* g, int64_t id, int64_t& out) {
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8: out = gguf_get_val_u8(g, id); return true;
        case GGUF_TYPE_INT8: out = gguf_get_val_i8(g, id); return true;
        case GGUF_TYPE_UINT16: out = gguf_get_val_u16(g, id); return true;
        case GGUF_TYPE_INT16: out = gguf_get_val_i16(g, id); return true;
        case GGUF_TYPE_UINT32: out = gguf_get_val_u32(g, id); return true;
        case GGUF_TYPE_INT32: out = gguf_get_val_i32(g, id); return true;
        case GGUF_TYPE_UINT64: out = (int64_t)gguf_get_val_u64(g, id); return true;
        case GGUF_TYPE_INT64: out = gguf_get_val_i64(g, id); return true;
        default: return false;
    }
}

int64_t GgufFile::get_int(const std::string& key) const {
    int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) fail("missing required key '" + key + "'");
    int64_t v = 0;
    if (!read_int(gguf, id, v))
        fail("key '" + key + "' has type " + gguf_type_name(gguf_get_kv_type(gguf, id)) + ", expected an integer");
    return v;
}

int64_t GgufFile::get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }

double GgufFile::get_float(const std::string& key, double def) const {
    int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) return def;
    auto t = gguf_get_kv_type(gguf, id);
    if (t == GGUF_TYPE_FLOAT32) return gguf_get_val_f32(gguf, id);
    if (t == GGUF_TYPE_FLOAT64) return gguf_get_val_f64(gguf, id);
    int64_t v = 0;
    if (read_int(gguf, id, v)) return (double)v;
    fail("key '" + key + "' has type " + gguf_type_name(t) + ", expected a number");
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
    int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) return def;
    if (gguf_get_kv_type(gguf, id) != GGUF_TYPE_BOOL)
        fail("key '" + key + "' has type " + gguf_type_name(gguf_get_kv_type(gguf, id)) + ", expected bool");
    return gguf_get_val_bool(gguf, id);
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
    std::vector<int64_t> out;
    int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) return out;
    if (gguf_get_kv_type(gguf, id) != GGUF_TYPE_ARRAY) {
        int64_t v = get_int(key);
        out.push_back(v);
        return out;
    }
    const size_t n = gguf_get_arr_n(gguf, id);
    const void* d = gguf_get_arr_data(gguf, id);
    switch (gguf_get_arr_type(gguf, id)) {
        case GGUF_TYPE_INT32: for (size_t i = 0; i < n; ++i) out.push_back(((const int32_t*)d)[i]); break;
        case GGUF_TYPE_UINT32: for (size_t i = 0; i < n; ++i) out.push_back(((const uint32_t*)d)[i]); break;
        case GGUF_TYPE_INT64: for (size_t i = 0; i < n; ++i) out.push_back(((const int64_t*)d)[i]); break;
        case GGUF_TYPE_BOOL:
        case GGUF_TYPE_UINT8: for (size_t i = 0; i < n; ++i) out.push_back(((const uint8_t*)d)[i]); break;
        default: fail("key '" + key + "' is an array of " + gguf_type_name(gguf_get_arr_type(gguf, id)) + ", expected integers");
    }
    return out;
}

ggml_tensor* GgufFile::tensor(const std::string& name) const { return ggml_get_tensor(meta, name.c_str()); }

static std::string shape_str(const int64_t* ne, size_t n) {
    std::string s = "[";
    for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

ggml_tensor* GgufFile::tensor_shaped(const std::string& name, const std::vector<int64_t>& ne) const {
    ggml_tensor* t = tensor(name);
    if (!t) return nullptr;
    for (size_t i = 0; i < 4; ++i) {
        const int64_t want = i < ne.size() ? ne[i] : 1;
        if (want >= 0 && t->ne[i] != want)
            fail("tensor '" + name + "' has shape " + shape_str(t->ne, (size_t)ggml_n_dims(t)) +
                 ", expected " + shape_str(ne.data(), ne.size()));
    }
    return t;
}

uint64_t GgufFile::tensor_file_offset(const std::string& name) const {
    int64_t id = gguf_find_tensor(gguf, name.c_str());
    return gguf_get_data_offset(gguf) + gguf_get_tensor_offset(gguf, id);
}

int GgufFile::remove_keys(const std::vector<std::string>& keys) {
    int n = 0;
    for (const std::string& k : keys) n += gguf_remove_key(gguf, k.c_str()) >= 0;
    return n;
}

}  // namespace lanner
