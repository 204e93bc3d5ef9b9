// pybind11 module lanner._core: a thin layer over Model and Context.
// Converts types (numpy in, numpy views out), maps errors to Python exceptions, and releases
// the GIL around every long native call (model load, decode). No logic lives here.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "context.h"
#include "error.h"
#include "kernels/mul_mat_q.h"
#include "model.h"
#include "vision/vision_model.h"

namespace py = pybind11;
using namespace lanner;

// ---- GGUF metadata -> Python ----------------------------------------------------------------

template <typename T>
static py::array copy_array(const void* data, size_t n) {
    py::array_t<T> a(n);
    if (n) std::memcpy(a.mutable_data(), data, n * sizeof(T));
    return std::move(a);
}

static py::object kv_value(const gguf_context* g, int64_t id) {
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8: return py::int_(gguf_get_val_u8(g, id));
        case GGUF_TYPE_INT8: return py::int_(gguf_get_val_i8(g, id));
        case GGUF_TYPE_UINT16: return py::int_(gguf_get_val_u16(g, id));
        case GGUF_TYPE_INT16: return py::int_(gguf_get_val_i16(g, id));
        case GGUF_TYPE_UINT32: return py::int_(gguf_get_val_u32(g, id));
        case GGUF_TYPE_INT32: return py::int_(gguf_get_val_i32(g, id));
        case GGUF_TYPE_UINT64: return py::int_(gguf_get_val_u64(g, id));
        case GGUF_TYPE_INT64: return py::int_(gguf_get_val_i64(g, id));
        case GGUF_TYPE_FLOAT32: return py::float_(gguf_get_val_f32(g, id));
        case GGUF_TYPE_FLOAT64: return py::float_(gguf_get_val_f64(g, id));
        case GGUF_TYPE_BOOL: return py::bool_(gguf_get_val_bool(g, id));
        case GGUF_TYPE_STRING: {
            const char* s = gguf_get_val_str(g, id);
            return py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(s, (Py_ssize_t)std::strlen(s), "replace"));
        }
        case GGUF_TYPE_ARRAY: {
            const size_t n = gguf_get_arr_n(g, id);
            const gguf_type at = gguf_get_arr_type(g, id);
            const void* d = (at == GGUF_TYPE_STRING || at == GGUF_TYPE_ARRAY) ? nullptr : gguf_get_arr_data(g, id);
            switch (at) {
                case GGUF_TYPE_STRING: {
                    py::list out(n);
                    for (size_t i = 0; i < n; ++i) {
                        const char* s = gguf_get_arr_str(g, id, i);
                        out[i] = py::reinterpret_steal<py::object>(
                            PyUnicode_DecodeUTF8(s, (Py_ssize_t)std::strlen(s), "replace"));
                    }
                    return std::move(out);
                }
                case GGUF_TYPE_UINT8: return copy_array<uint8_t>(d, n);
                case GGUF_TYPE_INT8: return copy_array<int8_t>(d, n);
                case GGUF_TYPE_UINT16: return copy_array<uint16_t>(d, n);
                case GGUF_TYPE_INT16: return copy_array<int16_t>(d, n);
                case GGUF_TYPE_UINT32: return copy_array<uint32_t>(d, n);
                case GGUF_TYPE_INT32: return copy_array<int32_t>(d, n);
                case GGUF_TYPE_UINT64: return copy_array<uint64_t>(d, n);
                case GGUF_TYPE_INT64: return copy_array<int64_t>(d, n);
                case GGUF_TYPE_FLOAT32: return copy_array<float>(d, n);
                case GGUF_TYPE_FLOAT64: return copy_array<double>(d, n);
                case GGUF_TYPE_BOOL: return copy_array<bool>(d, n);
                default: return py::none();  // nested arrays: not used by any key we read
            }
        }
        default: return py::none();
    }
}

static py::dict metadata_of(const GgufFile& f) {
    py::dict d;
    const gguf_context* g = f.gguf;
    for (int64_t i = 0; i < gguf_get_n_kv(g); ++i) d[gguf_get_key(g, i)] = kv_value(g, i);
    return d;
}

static py::dict metadata(const Model& m) { return metadata_of(*m.file); }

// ---- decode ---------------------------------------------------------------------------------

using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

// kernels/mul_mat_q.h against ggml_mul_mat, on host arrays (tests, benches)
py::array_t<float> mul_mat_q_check(int type, py::bytes w, F32 x, const std::string& how, int n_threads) {
    if (how != "ggml" && how != "op" && how != "avx512" && how != "avx2" && how != "scalar")
        throw std::invalid_argument("how must be ggml, op, avx512, avx2 or scalar, not " + how);
    if (type < 0 || type >= GGML_TYPE_COUNT || ggml_blck_size((ggml_type)type) <= 0)
        throw std::invalid_argument("unknown ggml type " + std::to_string(type));
    const auto t = (ggml_type)type;
    if (x.ndim() != 2) throw std::invalid_argument("x must be [M, K]");
    const int64_t M = x.shape(0), K = x.shape(1);
    if (K <= 0 || K % ggml_blck_size(t) != 0) throw std::invalid_argument("K must be a whole number of the type's blocks");
    const std::string wb = w;
    const size_t row = ggml_row_size(t, K);
    if (row == 0 || wb.size() % row != 0) throw std::invalid_argument("w is not whole rows of K");
    const int64_t N = (int64_t)(wb.size() / row);
    py::array_t<float> y({M, N});
    bool ok;
    {
        py::gil_scoped_release unlocked;
        ok = how == "ggml" || how == "op"
                 ? mul_mat_graph(t, wb.data(), K, N, x.data(), M, y.mutable_data(), n_threads, how == "op")
                 : mul_mat_q_host(t, wb.data(), K, N, x.data(), M, y.mutable_data(),
                                  how == "avx512" ? Isa::avx512 : how == "avx2" ? Isa::avx2 : Isa::scalar);
    }
    if (!ok) throw std::invalid_argument("unsupported: type " + std::to_string(type) + " how " + how);
    return y;
}

// embd: (n_rows, n_embd) rows for the entries whose token is < 0; attn_end: [n] (see batch.h)
static py::array decode(py::object self, I32 tokens, I32 pos, I32 seq, U8 want, std::optional<F32> embd,
                        std::optional<I32> attn_end) {
    Context& c = self.cast<Context&>();
    const py::ssize_t n = tokens.size();
    if (pos.size() != n || seq.size() != n || want.size() != n)
        throw std::invalid_argument("decode: tokens, pos, seq_id and want_logits must have the same length");
    Batch b{(int)n, tokens.data(), pos.data(), seq.data(), want.data()};
    py::ssize_t n_rows = 0;
    for (py::ssize_t i = 0; i < n; ++i) n_rows += tokens.data()[i] < 0 ? 1 : 0;
    if (embd) {
        if (embd->ndim() != 2 || embd->shape(0) != n_rows || embd->shape(1) != c.model().hp.n_embd)
            throw std::invalid_argument("decode: embd must be (" + std::to_string(n_rows) + ", " +
                                        std::to_string(c.model().hp.n_embd) + ") float32: one row per negative token");
        b.embd = embd->data();
    }
    if (attn_end) {
        if (attn_end->size() != n) throw std::invalid_argument("decode: attn_end must have one entry per token");
        b.attn_end = attn_end->data();
    }
    int n_out;
    {
        py::gil_scoped_release release;
        n_out = c.decode(b);
    }
    const py::ssize_t n_vocab = c.model().hp.n_vocab;
    // (n_out, n_vocab) float32 view of the context's buffer; `self` keeps it alive
    return py::array_t<float>({(py::ssize_t)n_out, n_vocab}, {n_vocab * (py::ssize_t)sizeof(float), (py::ssize_t)sizeof(float)},
                              c.logits(), self);
}

static ggml_type kv_type(const std::string& s, const char* what) {
    if (s == "f16") return GGML_TYPE_F16;
    if (s == "f32") return GGML_TYPE_F32;
    if (s == "q8_0") return GGML_TYPE_Q8_0;
    throw std::invalid_argument(std::string(what) + " must be one of f16, f32, q8_0; got '" + s + "'");
}

// ggml's own log: warnings and errors to stderr; its info/debug chatter (e.g. one line per
// repacked tensor) only with LANNER_GGML_LOG=debug.
static void ggml_log_filter(enum ggml_log_level level, const char* text, void*) {
    static const bool verbose = [] {
        const char* v = std::getenv("LANNER_GGML_LOG");
        return v && std::string(v) == "debug";
    }();
    static enum ggml_log_level last = GGML_LOG_LEVEL_NONE;  // CONT continues the previous level
    if (level != GGML_LOG_LEVEL_CONT) last = level;
    if (verbose || last == GGML_LOG_LEVEL_WARN || last == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// ---- ggml's device registry -> Python ---------------------------------------------------------

static py::list devices() {
    py::list out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        const char* type = "accel";
        switch (ggml_backend_dev_type(d)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU: type = "cpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_GPU: type = "gpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU: type = "igpu"; break;
            default: break;
        }
        py::dict e;
        e["name"] = ggml_backend_dev_name(d);
        e["backend"] = ggml_backend_reg_name(ggml_backend_dev_backend_reg(d));
        e["type"] = type;
        e["description"] = ggml_backend_dev_description(d);
        out.append(e);
    }
    return out;
}

PYBIND11_MODULE(_core, mod) {
    ggml_log_set(ggml_log_filter, nullptr);
    mod.doc() = "lanner native core: GGUF models on ggml, multi-sequence KV cache, batched decode";
    py::register_exception<ModelLoadError>(mod, "ModelLoadError", PyExc_ValueError);
    // The decode failures are lanner.types' classes, so the engine (and its test doubles) catch
    // one type whether the core is native or fake.
    py::module_ types = py::module_::import("lanner.types");
    static py::handle kv_full = py::object(types.attr("KvCacheFullError")).release();  // kept for life
    static py::handle decode_error = py::object(types.attr("DecodeError")).release();
    mod.attr("KvCacheFullError") = kv_full;
    mod.attr("DecodeError") = decode_error;
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const KvCacheFullError& e) {
            PyErr_SetString(kv_full.ptr(), e.what());
        } catch (const DecodeError& e) {
            PyErr_SetString(decode_error.ptr(), e.what());
        }
    });

    mod.def("devices", &devices,
            "ggml's device registry in this build: [{name, backend, type, description}], in "
            "registry order; type is 'cpu', 'gpu', 'igpu' or 'accel'");

    mod.def("mul_mat_q_check", &mul_mat_q_check, py::arg("type"), py::arg("w"), py::arg("x"),
            py::arg("how"), py::arg("n_threads") = 1,
            "Y [M, N] = X [M, K] times the rows of a quantized W (bytes, ggml type id) by: 'ggml' "
            "(ggml_mul_mat), 'op' (lanner's mul_mat_q op in a ggml graph), 'avx512' / 'avx2' / 'scalar' "
            "(the kernel's builds on plain arrays). For the kernel tests and benches.");
    mod.def("mul_mat_q_isa_available", [](const std::string& isa) {
                if (isa != "avx512" && isa != "avx2" && isa != "scalar") throw std::invalid_argument("unknown build " + isa);
                return mul_mat_q_isa_available(isa == "avx512" ? Isa::avx512 : isa == "avx2" ? Isa::avx2 : Isa::scalar);
            }, py::arg("isa"), "whether this CPU runs the mul_mat_q build 'avx512', 'avx2' or 'scalar'");

    py::class_<Model, std::shared_ptr<Model>>(mod, "Model")
        .def(py::init([](const std::string& path, bool repack, const std::string& device) {
                 py::gil_scoped_release release;
                 return std::make_shared<Model>(path, repack, device);
             }),
             py::arg("path"), py::arg("repack") = false, py::arg("device") = "")
        .def_property_readonly("path", [](const Model& m) { return m.file->path; })
        .def_property_readonly("arch", [](const Model& m) { return m.arch_name; })
        .def_property_readonly("n_vocab", [](const Model& m) { return m.hp.n_vocab; })
        .def_property_readonly("n_ctx_train", [](const Model& m) { return m.hp.n_ctx_train; })
        .def_property_readonly("n_embd", [](const Model& m) { return m.hp.n_embd; })
        .def_property_readonly("n_layer", [](const Model& m) { return m.hp.n_layer; })
        .def_property_readonly("n_head", [](const Model& m) { return m.hp.n_head; })
        .def_property_readonly("n_head_kv", [](const Model& m) { return m.hp.n_head_kv; })
        .def_property_readonly("n_params", [](const Model& m) { return m.n_params; })
        .def_property_readonly("size_bytes", [](const Model& m) { return m.weights_bytes; })
        .def_property_readonly("n_repacked", [](const Model& m) { return m.n_repacked; },
                               "weights stored in a CPU repacking buffer type for faster matmuls")
        .def_property_readonly("device", [](const Model& m) { return std::string(ggml_backend_dev_name(m.device)); })
        .def_property_readonly("metadata", &metadata, "every GGUF key: scalars, str, list[str], numpy arrays")
        .def("drop_metadata", [](Model& m, const std::vector<std::string>& keys) { return m.file->remove_keys(keys); },
             py::arg("keys"),
             "forget these GGUF keys (the vocabulary tables once a tokenizer is built), freeing their "
             "memory; later .metadata lacks them. Returns how many were present");

    py::class_<Context>(mod, "Context")
        .def(py::init([](std::shared_ptr<Model> m, int n_ctx, int n_batch, int n_seq_max, int n_threads,
                         const std::string& type_k, const std::string& type_v, bool flash_attn,
                         bool batch_invariant) {
                 ContextParams p{n_ctx, n_batch, n_seq_max, n_threads};
                 p.type_k = kv_type(type_k, "type_k");
                 p.type_v = kv_type(type_v, "type_v");
                 p.flash_attn = flash_attn;
                 p.batch_invariant = batch_invariant;
                 py::gil_scoped_release release;
                 return std::make_unique<Context>(std::move(m), p);
             }),
             py::arg("model"), py::arg("n_ctx") = 4096, py::arg("n_batch") = 512, py::arg("n_seq_max") = 16,
             py::arg("n_threads") = 0, py::arg("type_k") = "f16", py::arg("type_v") = "f16", py::arg("flash_attn") = true,
             py::arg("batch_invariant") = true)
        .def("decode", &decode, py::arg("tokens"), py::arg("pos"), py::arg("seq_id"), py::arg("want_logits"),
             py::arg("embd") = py::none(), py::arg("attn_end") = py::none(),
             "Decode one batch; returns (n_out, n_vocab) float32 logits for entries with want_logits, "
             "a view valid until the next decode. Entries with a negative token take the next row of "
             "embd (n_rows, n_embd); attn_end[i] (>= pos) lets a block of entries see each other.")
        .def("seq_rm", [](Context& c, int s, int p0, int p1) { return c.kv().seq_rm(s, p0, p1); },
             py::arg("seq_id"), py::arg("p0") = -1, py::arg("p1") = -1)
        .def("seq_cp", [](Context& c, int a, int b, int p0, int p1) { c.kv().seq_cp(a, b, p0, p1); },
             py::arg("src"), py::arg("dst"), py::arg("p0") = -1, py::arg("p1") = -1)
        .def("seq_keep", [](Context& c, int s) { c.kv().seq_keep(s); }, py::arg("seq_id"))
        .def("seq_pos_max", [](Context& c, int s) { return c.kv().seq_pos_max(s); }, py::arg("seq_id"))
        .def("seq_pos_min", [](Context& c, int s) { return c.kv().seq_pos_min(s); }, py::arg("seq_id"))
        .def("kv_clear", [](Context& c) { c.kv().clear(); })
        .def("n_cells_used", [](Context& c) { return c.kv().n_used; })
        .def_property_readonly("kv_compactions", [](Context& c) { return c.kv().n_compactions; },
                               "times the cache packed its used cells down to keep sequences in position order")
        .def_property_readonly("n_ctx", [](Context& c) { return c.params().n_ctx; })
        .def_property_readonly("n_batch", [](Context& c) { return c.params().n_batch; })
        .def_property_readonly("n_seq_max", [](Context& c) { return c.params().n_seq_max; })
        .def_property_readonly("device", &Context::device_name)
        .def_property_readonly("flash_attn", &Context::use_flash_attn)
        .def_property_readonly("batch_invariant", [](Context& c) { return c.params().batch_invariant != 0; })
        .def_property_readonly("mm_q", &Context::use_mm_q,
                               "weights' matmuls of 2+ columns through lanner's register-tiled kernel (LANNER_MM_Q=0: off)")
        .def_property_readonly("last_mm_q_ops", &Context::last_n_mm_q,
                               "matmuls through that kernel in the last graph built")
        .def_property_readonly("attn_rows", &Context::use_attn_rows,
                               "attention visits each row's own cells (per-row lists), not all n_kv")
        .def_property_readonly("type_k", [](Context& c) { return std::string(ggml_type_name(c.params().type_k)); })
        .def_property_readonly("type_v", [](Context& c) { return std::string(ggml_type_name(c.params().type_v)); })
        .def_property("n_threads", &Context::n_threads, &Context::set_n_threads);

    py::class_<VisionModel, std::shared_ptr<VisionModel>>(mod, "VisionModel")
        .def(py::init([](const std::string& path, const std::string& device) {
                 py::gil_scoped_release release;
                 return std::make_shared<VisionModel>(path, device);
             }),
             py::arg("path"), py::arg("device") = "")
        .def_property_readonly("path", [](const VisionModel& m) { return m.file->path; })
        .def_property_readonly("projector", [](const VisionModel& m) { return m.proj_name; })
        .def_property_readonly("image_size", [](const VisionModel& m) { return m.hp.image_size; })
        .def_property_readonly("patch_size", [](const VisionModel& m) { return m.hp.patch_size; })
        .def_property_readonly("n_embd", [](const VisionModel& m) { return m.hp.n_embd_out; },
                               "width of the embeddings (= the text model's n_embd)")
        .def_property_readonly("n_tokens", &VisionModel::n_tokens, "embedding rows per image")
        .def_property_readonly("image_mean", [](const VisionModel& m) {
            return py::make_tuple(m.hp.image_mean[0], m.hp.image_mean[1], m.hp.image_mean[2]); })
        .def_property_readonly("image_std", [](const VisionModel& m) {
            return py::make_tuple(m.hp.image_std[0], m.hp.image_std[1], m.hp.image_std[2]); })
        .def_property_readonly("size_bytes", [](const VisionModel& m) { return m.weights_bytes; })
        .def_property_readonly("device", [](const VisionModel& m) { return std::string(ggml_backend_dev_name(m.device)); })
        .def_property_readonly("metadata", [](const VisionModel& m) { return metadata_of(*m.file); });

    py::class_<VisionEncoder>(mod, "VisionEncoder")
        .def(py::init([](std::shared_ptr<VisionModel> m, int n_threads) {
                 py::gil_scoped_release release;
                 return std::make_unique<VisionEncoder>(std::move(m), n_threads);
             }),
             py::arg("model"), py::arg("n_threads") = 0)
        .def("encode", [](VisionEncoder& e, F32 pixels) {
                 const auto& hp = e.model().hp;
                 if (pixels.ndim() != 3 || pixels.shape(0) != 3 || pixels.shape(1) != hp.image_size ||
                     pixels.shape(2) != hp.image_size)
                     throw std::invalid_argument("encode: pixels must be (3, " + std::to_string(hp.image_size) + ", " +
                                                 std::to_string(hp.image_size) + ") float32, normalised");
                 py::array_t<float> out({(py::ssize_t)e.model().n_tokens(), (py::ssize_t)hp.n_embd_out});
                 float* dst = out.mutable_data();
                 {
                     py::gil_scoped_release release;
                     e.encode(pixels.data(), dst);
                 }
                 return out;
             },
             py::arg("pixels"), "(3, H, W) normalised planar RGB -> (n_tokens, n_embd) float32 embeddings")
        .def_property("n_threads", nullptr, &VisionEncoder::set_n_threads);
}
