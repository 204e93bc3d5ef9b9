// lanner-bench-matmul: throughput of ggml's matrix multiply on the CPU backend, per weight type.
// ggml's public API (ggml_mul_mat graphs, weights quantized with ggml_quantize_chunk, timed
// ggml_backend_graph_compute), and lanner's own quantized matmul op (kernels/mul_mat_q.h, buffer
// column "lanner") for the types it covers, timed the same way next to ggml's. For each shape K x M (in x out, ggml
// order: W is [K, M]) and each column count N it times Y[M, N] = W^T X[K, N] with X in f32 (ggml
// converts X to the weight type's dot type inside the op, as in the model's graphs).
// The CPU backend runs on a persistent ggml threadpool, as lanner's Context does. One graph
// holds several multiplies, as a model's graph does, so the per-graph cost (waking the worker
// threads) is spread over at least ~64 MFLOP: by default they all read one W, which
// stays in cache; with `-w MiB` each reads its own copy of W and the copies span MiB, so a run
// streams weights from DRAM as a decode step does.
// Reported per multiply, median over runs: ms, GB/s (bytes of W per second), GFLOP/s
// (2*K*M*N), the speed relative to F16 in the same run, the error of column 0 against a
// double-precision product with the dequantized weights; also the fastest run and how much CPU
// other processes used meanwhile (others%, of the whole machine): on a shared machine one
// neighbour on one of our cores stalls every op, since with as many threads as cores the
// others wait for the late one at each barrier.
//
//   lanner-bench-matmul [-t threads] [-w MiB] [-b budget_ms] [-m min_reps] [-r max_reps]
//                       [-s 2048x2048,576x1536] [-c 1,32,512] [-T f32,f16,q8_0,...] [--repack]
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <strings.h>

#include "cpu_load.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "kernels/mul_mat_q.h"

// ---- structs --------------------------------------------------------------------------------

struct Shape {
    int64_t k = 0;  // input features (W's row length, ggml ne[0])
    int64_t m = 0;  // output features (W's rows, ggml ne[1])
};

struct Args {
    int n_threads = 2;
    int max_reps = 1000;      // timed runs per case, at most ...
    double budget_ms = 200;   // ... stopping once a case has run this long (ms) ...
    int min_reps = 5;         // ... and at least this many times
    std::vector<Shape> shapes = {{2048, 2048}, {576, 1536}, {1536, 576}};
    std::vector<int> cols = {1, 32, 512};
    std::vector<ggml_type> types = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_Q8_0, GGML_TYPE_Q6_K,
                                    GGML_TYPE_Q5_0, GGML_TYPE_Q4_K, GGML_TYPE_Q4_1, GGML_TYPE_Q4_0};
    double set_mib = 0;       // weight working set per graph (MiB); 0 = one copy of W
    bool repack = false;      // also run each type from the CPU backend's repacking buffer type
};

struct Result {
    ggml_type type;
    bool repacked;     // W in the repacking buffer type
    int n;             // columns
    size_t w_bytes;    // bytes of W
    int n_mul = 1;     // multiplies per graph
    int n_copy = 1;    // distinct copies of W they read
    double ms = 0;     // median per multiply
    double ms_min = 0; // fastest run, per multiply
    int reps = 0;      // runs
    double others_pct = -1;  // CPU other processes used meanwhile, % of the machine (-1 unknown)
    double err = 0;    // max |y - ref| / max |ref| over column 0
    bool lanner = false;  // lanner's mul_mat_q op instead of ggml_mul_mat
};

// ---- arguments ------------------------------------------------------------------------------

static void usage(const char* argv0) {
    std::printf(
        "usage: %s [options]\n"
        "  -t N            CPU threads (default 2)\n"
        "  -w MiB          weights working set: the multiplies of a graph read distinct copies of W\n"
        "                  spanning MiB (pick > last-level cache to time DRAM streaming like a decode\n"
        "                  step; default 0 = all read one W, which stays in cache)\n"
        "  -b MS           time budget per case: runs repeat until MS ms have passed (default 200),\n"
        "                  at least -m times (default 5) and at most -r times (default 1000);\n"
        "                  the median run is reported\n"
        "  -s KxM,...      weight shapes, in x out (default 2048x2048,576x1536,1536x576)\n"
        "  -c N,...        columns of X: 1 = GEMV (decode), more = GEMM (prefill) (default 1,32,512)\n"
        "  -T type,...     weight types by ggml name (default f32,f16,q8_0,q6_K,q5_0,q4_K,q4_1,q4_0)\n"
        "  --repack        also time weights held in the CPU backend's repacking buffer type\n",
        argv0);
}

static std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i <= s.size()) {
        size_t j = s.find(sep, i);
        if (j == std::string::npos) j = s.size();
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

static bool type_from_name(const std::string& name, ggml_type& out) {
    for (int i = 0; i < GGML_TYPE_COUNT; ++i) {
        const char* n = ggml_type_name((ggml_type)i);
        if (n && ggml_type_size((ggml_type)i) > 0 && strcasecmp(n, name.c_str()) == 0) {
            out = (ggml_type)i;
            return true;
        }
    }
    return false;
}

static bool parse_args(int argc, char** argv, Args& a) {
    for (int i = 1; i < argc; ++i) {
        std::string o = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", o.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (o == "-h" || o == "--help") { usage(argv[0]); std::exit(0); }
        else if (o == "-t") a.n_threads = std::atoi(val().c_str());
        else if (o == "-r") a.max_reps = std::atoi(val().c_str());
        else if (o == "-m") a.min_reps = std::atoi(val().c_str());
        else if (o == "-b") a.budget_ms = std::atof(val().c_str());
        else if (o == "-w") a.set_mib = std::atof(val().c_str());
        else if (o == "--repack") a.repack = true;
        else if (o == "-s") {
            a.shapes.clear();
            for (const auto& s : split(val(), ',')) {
                Shape sh;
                if (std::sscanf(s.c_str(), "%" SCNd64 "x%" SCNd64, &sh.k, &sh.m) != 2 || sh.k <= 0 || sh.m <= 0) {
                    std::fprintf(stderr, "bad shape '%s' (want KxM)\n", s.c_str());
                    return false;
                }
                a.shapes.push_back(sh);
            }
        } else if (o == "-c") {
            a.cols.clear();
            for (const auto& s : split(val(), ',')) a.cols.push_back(std::atoi(s.c_str()));
        } else if (o == "-T") {
            a.types.clear();
            for (const auto& s : split(val(), ',')) {
                ggml_type t;
                if (!type_from_name(s, t)) {
                    std::fprintf(stderr, "unknown ggml type '%s'\n", s.c_str());
                    return false;
                }
                if (ggml_quantize_requires_imatrix(t)) {
                    std::fprintf(stderr, "%s needs an importance matrix to quantize; not supported here\n", s.c_str());
                    return false;
                }
                a.types.push_back(t);
            }
        } else {
            std::fprintf(stderr, "unknown option '%s'\n", o.c_str());
            return false;
        }
    }
    if (a.n_threads <= 0 || a.min_reps <= 0 || a.max_reps <= 0 || a.budget_ms < 0) return false;
    if (a.shapes.empty() || a.cols.empty() || a.types.empty()) return false;
    for (int n : a.cols) if (n <= 0) return false;
    a.min_reps = std::min(a.min_reps, a.max_reps);
    return true;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t h = v.size() / 2;
    return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// ---- weights --------------------------------------------------------------------------------

static std::vector<float> random_f32(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// W [K, M] as f32 -> bytes of `type` (ggml_row_size(type, K) per row).
static std::vector<uint8_t> quantize(ggml_type type, const std::vector<float>& w, const Shape& s) {
    std::vector<uint8_t> q(ggml_row_size(type, s.k) * s.m);
    ggml_quantize_chunk(type, w.data(), q.data(), 0, s.m, s.k, nullptr);
    return q;
}

// The values the kernel actually multiplies: W decoded back to f32, [K, M].
static std::vector<float> dequantize(ggml_type type, const std::vector<uint8_t>& q, const Shape& s) {
    std::vector<float> w((size_t)s.k * s.m);
    if (type == GGML_TYPE_F32) {
        std::memcpy(w.data(), q.data(), w.size() * sizeof(float));
        return w;
    }
    const size_t row = ggml_row_size(type, s.k);
    for (int64_t r = 0; r < s.m; ++r) ggml_get_type_traits(type)->to_float(q.data() + r * row, w.data() + r * s.k, s.k);
    return w;
}

// The CPU backend's repacking buffer type (weights re-laid out at upload for wider SIMD), if any.
static ggml_backend_buffer_type_t find_repack_buft(ggml_backend_dev_t dev) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
        reg, "ggml_backend_dev_get_extra_bufts");
    if (!get_extra) return nullptr;
    for (ggml_backend_buffer_type_t* b = get_extra(dev); b && *b; ++b)
        if (std::strstr(ggml_backend_buft_name(*b), "REPACK")) return *b;
    return nullptr;
}

// ---- one case: build, upload, time ----------------------------------------------------------

// Runs gf until a.budget_ms have passed (at least a.min_reps, at most a.max_reps times); sets
// r.ms (median), r.ms_min, r.reps and r.others_pct, all per graph.
static void time_graph(ggml_backend_t backend, ggml_cgraph* gf, const Args& a, Result& r) {
    using clock = std::chrono::steady_clock;
    std::vector<double> ms;
    const CpuSample cpu0 = cpu_sample();
    const auto t_case = clock::now();
    for (int i = 0; i < a.max_reps; ++i) {
        const auto t0 = clock::now();
        ggml_backend_graph_compute(backend, gf);
        ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
        const double spent = std::chrono::duration<double, std::milli>(clock::now() - t_case).count();
        if ((int)ms.size() >= a.min_reps && spent > a.budget_ms) break;
    }
    r.others_pct = cpu_others_pct(cpu0, cpu_sample());
    r.ms = median(ms);
    r.ms_min = *std::min_element(ms.begin(), ms.end());
    r.reps = (int)ms.size();
}

// max_m |y[m] - ref[m]| / max_m |ref[m]|, ref[m] = sum_k w_ref[k, m] * x[k, 0] in double.
static double column0_error(const std::vector<float>& y, const std::vector<float>& w_ref,
                            const std::vector<float>& x, const Shape& s) {
    double max_ref = 0, max_diff = 0;
    for (int64_t m = 0; m < s.m; ++m) {
        double acc = 0;
        for (int64_t k = 0; k < s.k; ++k) acc += (double)w_ref[m * s.k + k] * x[k];
        max_ref = std::max(max_ref, std::fabs(acc));
        max_diff = std::max(max_diff, std::fabs(acc - y[m]));
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

// Times one graph of Y_i = mul_mat(W_(i mod n_copy), X) for i < n_mul, for one type, shape and
// column count. Returns false (nothing timed) when `buft` cannot hold W for this op (repacking
// is defined for some types and shapes only).
static bool run_case(ggml_backend_t backend, ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft,
                     const Args& a, const Shape& s, int n, int n_mul, int n_copy, ggml_type type,
                     const std::vector<uint8_t>& wq, const std::vector<float>& w_ref, const std::vector<float>& x,
                     Result& r, bool lanner_op) {
    const size_t n_graph = (size_t)n_mul + n_copy + 8;  // nodes and leafs
    const size_t meta_w = (n_copy + 1) * ggml_tensor_overhead();
    const size_t meta_io = (n_mul + 2) * ggml_tensor_overhead() + ggml_graph_overhead_custom(n_graph, false);
    ggml_context_ptr ctx_w(ggml_init({meta_w, nullptr, /*no_alloc=*/true}));
    ggml_context_ptr ctx_io(ggml_init({meta_io, nullptr, /*no_alloc=*/true}));
    ggml_tensor* X = ggml_new_tensor_2d(ctx_io.get(), GGML_TYPE_F32, s.k, n);  // [K, N]
    ggml_cgraph* gf = ggml_new_graph_custom(ctx_io.get(), n_graph, false);
    std::vector<ggml_tensor*> W(n_copy), Y(n_mul);
    for (int c = 0; c < n_copy; ++c) W[c] = ggml_new_tensor_2d(ctx_w.get(), type, s.k, s.m);  // [K, M]
    for (int i = 0; i < n_mul; ++i) {
        Y[i] = lanner_op ? lanner::mul_mat_q(ctx_io.get(), W[i % n_copy], X)  // [M, N]
                         : ggml_mul_mat(ctx_io.get(), W[i % n_copy], X);
        ggml_build_forward_expand(gf, Y[i]);
    }

    // Ask the device whether it runs this op with W in `buft` (W points at an empty buffer of
    // that type while asking; the answer depends on the buffer type, not on the data).
    if (!lanner_op) {
        ggml_backend_buffer_ptr probe(ggml_backend_buft_alloc_buffer(buft, 0));
        W[0]->buffer = probe.get();
        const bool ok = ggml_backend_dev_supports_op(dev, Y[0]);
        W[0]->buffer = nullptr;
        if (!ok) return false;
    }
    ggml_backend_buffer_ptr buf_w(ggml_backend_alloc_ctx_tensors_from_buft(ctx_w.get(), buft));
    ggml_backend_buffer_ptr buf_io(ggml_backend_alloc_ctx_tensors(ctx_io.get(), backend));
    if (!buf_w || !buf_io) { std::fprintf(stderr, "allocation failed\n"); std::exit(1); }
    if (lanner_op && !lanner::mul_mat_q_supported(W[0], X)) return false;
    // a repacking buffer re-lays the data out here
    for (ggml_tensor* w : W) ggml_backend_tensor_set(w, wq.data(), 0, wq.size());
    ggml_backend_tensor_set(X, x.data(), 0, sizeof(float) * s.k * n);

    if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) {  // warm-up (work buffer, caches)
        std::fprintf(stderr, "graph compute failed for %s\n", ggml_type_name(type));
        std::exit(1);
    }
    time_graph(backend, gf, a, r);
    r.ms /= n_mul, r.ms_min /= n_mul;
    r.w_bytes = ggml_nbytes(W[0]);
    r.n_mul = n_mul;
    r.n_copy = n_copy;

    std::vector<float> y(s.m);  // column 0 of Y[0]
    ggml_backend_tensor_get(Y[0], y.data(), 0, sizeof(float) * s.m);
    r.err = column0_error(y, w_ref, x, s);
    return true;
}

// Every type and column count for one shape; `buft_repack` null = plain CPU buffers only.
static std::vector<Result> run_shape(ggml_backend_t backend, ggml_backend_dev_t dev,
                                     ggml_backend_buffer_type_t buft_cpu, ggml_backend_buffer_type_t buft_repack,
                                     const Args& a, const Shape& s, uint32_t seed) {
    const int max_n = *std::max_element(a.cols.begin(), a.cols.end());
    const std::vector<float> w = random_f32((size_t)s.k * s.m, 1234 + seed);  // [K, M]
    const std::vector<float> x = random_f32((size_t)s.k * max_n, 99);         // [K, max N]
    std::vector<Result> rs;
    for (ggml_type type : a.types) {
        if (s.k % ggml_blck_size(type) != 0) {
            std::printf("(skip %s for K=%" PRId64 ": not a multiple of its block of %" PRId64 ")\n",
                        ggml_type_name(type), s.k, ggml_blck_size(type));
            continue;
        }
        const std::vector<uint8_t> wq = quantize(type, w, s);
        const std::vector<float> w_ref = dequantize(type, wq, s);
        const int n_copy = (int)std::min(1024.0, std::max(1.0, std::ceil(a.set_mib * 1048576.0 / wq.size())));
        for (int n : a.cols) {
            const double mflop = 2e-6 * s.k * s.m * n;  // one multiply
            const int n_mul = std::max(n_copy, (int)std::min(64.0, std::ceil(64.0 / mflop)));
            for (int pass = 0; pass < 3; ++pass) {  // ggml, ggml repacked, lanner's op
                if (pass == 1 && !buft_repack) continue;
                Result r{type, pass == 1, n, 0};
                r.lanner = pass == 2;
                ggml_backend_buffer_type_t buft = pass == 1 ? buft_repack : buft_cpu;
                if (run_case(backend, dev, buft, a, s, n, n_mul, n_copy, type, wq, w_ref, x, r, r.lanner))
                    rs.push_back(r);
            }
        }
    }
    return rs;
}

// ---- report ---------------------------------------------------------------------------------

static void print_shape(const Shape& s, const Args& a, const std::vector<Result>& rs) {
    std::printf("\n== W %" PRId64 "x%" PRId64 " (K=%" PRId64 " in, M=%" PRId64 " out), %d threads, %s ==\n", s.k,
                s.m, s.k, s.m, a.n_threads,
                a.set_mib > 0 ? "each multiply reads its own copy of W"
                              : "all multiplies read one W (cached if it fits)");
    std::printf("%-6s %-7s %7s %9s %5s %5s %9s %9s %7s %8s %7s %8s %5s %7s\n", "type", "buffer", "W MiB", "W set MiB",
                "muls", "cols", "ms/mul", "min ms", "GB/s", "GFLOP/s", "vs F16", "err", "runs", "others%");
    for (int n : a.cols) {
        double f16_ms = 0;
        for (const auto& r : rs)
            if (r.n == n && r.type == GGML_TYPE_F16 && !r.repacked && !r.lanner) f16_ms = r.ms;
        for (const auto& r : rs) {
            if (r.n != n) continue;
            const double sec = r.ms * 1e-3;
            const double gbs = r.w_bytes / sec * 1e-9;
            const double gflops = 2.0 * s.k * s.m * n / sec * 1e-9;
            char rel[16] = "-", others[16] = "-";
            if (r.others_pct >= 0) std::snprintf(others, sizeof others, "%.0f", r.others_pct);
            if (f16_ms > 0) std::snprintf(rel, sizeof rel, "%.2fx", f16_ms / r.ms);
            std::printf("%-6s %-7s %7.2f %9.1f %5d %5d %9.4f %9.4f %7.1f %8.1f %7s %8.1e %5d %7s%s\n",
                        ggml_type_name(r.type), r.lanner ? "lanner" : r.repacked ? "repack" : "cpu", r.w_bytes / 1048576.0,
                        r.n_copy * r.w_bytes / 1048576.0, r.n_mul, n,
                        r.ms, r.ms_min, gbs, gflops, rel, r.err, r.reps, others,
                        r.err > 0.05 ? "  <- large error" : "");
        }
    }
}

// ---- main -----------------------------------------------------------------------------------

// ggml's log minus its chatter (the repacking buffer announces every tensor it repacks).
static void log_warnings_only(ggml_log_level level, const char* text, void*) {
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

int main(int argc, char** argv) {
    Args a;
    if (!parse_args(argc, argv, a)) { usage(argv[0]); return 2; }
    ggml_log_set(log_warnings_only, nullptr);

    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) { std::fprintf(stderr, "ggml has no CPU backend\n"); return 1; }
    // persistent workers, as lanner's Context uses (else ggml starts threads for every graph);
    // declared first, so it outlives the backend that points at it
    ggml_threadpool_params tpp = ggml_threadpool_params_default(a.n_threads);
    std::unique_ptr<ggml_threadpool, void (*)(ggml_threadpool*)> pool(ggml_threadpool_new(&tpp), ggml_threadpool_free);
    ggml_backend_ptr backend(ggml_backend_dev_init(dev, nullptr));
    ggml_backend_cpu_set_n_threads(backend.get(), a.n_threads);
    ggml_backend_cpu_set_threadpool(backend.get(), pool.get());
    ggml_backend_buffer_type_t buft_cpu = ggml_backend_dev_buffer_type(dev);
    ggml_backend_buffer_type_t buft_repack = a.repack ? find_repack_buft(dev) : nullptr;

    std::printf("ggml %s (%s), device %s: %s\n", ggml_version(), ggml_commit(), ggml_backend_dev_name(dev),
                ggml_backend_dev_description(dev));
    std::printf("CPU backend built with: AVX2 %d, FMA %d, F16C %d, AVX512 %d, AVX-VNNI %d\n", ggml_cpu_has_avx2(),
                ggml_cpu_has_fma(), ggml_cpu_has_f16c(), ggml_cpu_has_avx512(), ggml_cpu_has_avx_vnni());
    if (a.repack)
        std::printf("repacking buffer type: %s\n", buft_repack ? ggml_backend_buft_name(buft_repack) : "none");

    for (size_t si = 0; si < a.shapes.size(); ++si) {
        const Shape& s = a.shapes[si];
        print_shape(s, a, run_shape(backend.get(), dev, buft_cpu, buft_repack, a, s, (uint32_t)si));
        std::fflush(stdout);
    }
    ggml_quantize_free();
    return 0;
}
