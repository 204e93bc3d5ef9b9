// lanner-bench-attn: decode-step attention, ggml's masked flash attention (reference mode, as
// batch_invariant runs it) vs lanner's per-row cell lists op (csrc/kernels/attn_rows.h).
// S sequences of L cells each, interleaved in the cache (cell c belongs to sequence c % S, as
// concurrent decoding places them); one query row per sequence at its last position. Prints the
// median time per op of each path (runs alternate; CPU time with -t 1) and whether the outputs are bit-identical.
//   lanner-bench-attn [-t threads] [-d head_dim] [-H n_head] [-K n_head_kv] [-S 1,4,8] [-L cells] [-r runs]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "kernels/attn_rows.h"

namespace {

struct Opts {
    int threads = 2, hd = 64, n_head = 9, n_head_kv = 3, L = 1000, runs = 20;
    std::vector<int> seqs{1, 4, 8};
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// One graph holding `reps` copies of the attention (like a model's layers), on the CPU backend.
struct Case {
    ggml_context* ctx = nullptr;
    ggml_backend_buffer_t buf = nullptr;
    ggml_cgraph* gf = nullptr;
    ~Case() {
        if (buf) ggml_backend_buffer_free(buf);
        if (ctx) ggml_free(ctx);
    }
};

void run_case(const Opts& o, int S, ggml_backend_t be) {
    const int n_kv = S * o.L, T = S, reps = 30;
    const int64_t n_embd_kv = (int64_t)o.hd * o.n_head_kv;
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<ggml_fp16_t> kv_data((size_t)n_embd_kv * n_kv);
    std::vector<float> q_data((size_t)o.hd * o.n_head * T);
    std::vector<ggml_fp16_t> mask((size_t)n_kv * T, ggml_fp32_to_fp16(-INFINITY));
    lanner::AttnRowsInput in;
    in.cells.assign(lanner::attn_rows_cap(T, n_kv, S), 0);
    in.rows.resize(3 * (size_t)T);
    for (int s = 0; s < S; ++s) {  // sequence s owns cells s, s+S, ...: list of L cells, all visible
        for (int j = 0; j < o.L; ++j) {
            in.cells[(size_t)s * o.L + j] = s + j * S;
            mask[(size_t)s * n_kv + s + (size_t)j * S] = ggml_fp32_to_fp16(0.0f);
        }
        in.rows[3 * s] = s * o.L, in.rows[3 * s + 1] = o.L, in.rows[3 * s + 2] = 0;
    }

    Case c[2];
    ggml_tensor* outs[2];
    for (int path = 0; path < 2; ++path) {  // both graphs first, then runs alternate between them
        ggml_init_params ip{ggml_tensor_overhead() * 1024 + ggml_graph_overhead(), nullptr, true};
        c[path].ctx = ggml_init(ip);
        ggml_context* ctx = c[path].ctx;
        ggml_tensor* kc = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_embd_kv, n_kv);
        ggml_tensor* vc = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_embd_kv, n_kv);
        ggml_tensor* q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, o.hd, o.n_head, T);
        ggml_tensor* m = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, T);
        ggml_tensor* cells = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, (int64_t)in.cells.size());
        ggml_tensor* rows = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, (int64_t)in.rows.size());
        c[path].gf = ggml_new_graph(ctx);
        const float scale = 1.0f / std::sqrt((float)o.hd);
        for (int r = 0; r < reps; ++r) {
            ggml_tensor* y;
            if (path == 0) {
                ggml_tensor* k = ggml_view_3d(ctx, kc, o.hd, n_kv, o.n_head_kv, kc->nb[1], ggml_row_size(kc->type, o.hd), 0);
                ggml_tensor* v = ggml_view_3d(ctx, vc, o.hd, n_kv, o.n_head_kv, vc->nb[1], ggml_row_size(vc->type, o.hd), 0);
                y = ggml_flash_attn_ext(ctx, ggml_permute(ctx, q, 0, 2, 1, 3), k, v, m, scale, 0.0f, 0.0f);
                ggml_flash_attn_ext_set_prec(y, GGML_PREC_F32);
            } else {
                y = lanner::attn_rows(ctx, q, kc, vc, cells, rows, o.n_head_kv, scale, 0.0f, false);
            }
            outs[path] = y;
            ggml_build_forward_expand(c[path].gf, y);
        }
        c[path].buf = ggml_backend_alloc_ctx_tensors(ctx, be);
        rng.seed(42);
        for (size_t i = 0; i < kv_data.size(); ++i) kv_data[i] = ggml_fp32_to_fp16(nd(rng));
        ggml_backend_tensor_set(kc, kv_data.data(), 0, ggml_nbytes(kc));
        for (size_t i = 0; i < kv_data.size(); ++i) kv_data[i] = ggml_fp32_to_fp16(nd(rng));
        ggml_backend_tensor_set(vc, kv_data.data(), 0, ggml_nbytes(vc));
        for (auto& x : q_data) x = nd(rng);
        ggml_backend_tensor_set(q, q_data.data(), 0, ggml_nbytes(q));
        ggml_backend_tensor_set(m, mask.data(), 0, ggml_nbytes(m));
        ggml_backend_tensor_set(cells, in.cells.data(), 0, ggml_nbytes(cells));
        ggml_backend_tensor_set(rows, in.rows.data(), 0, ggml_nbytes(rows));
    }
    // 1 thread: the op runs on this thread, so its CPU time (not disturbed by other jobs' waits)
    auto now_ms = [&] {
        timespec ts;
        clock_gettime(o.threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    };
    std::vector<double> ts[2];
    for (int r = 0; r < o.runs + 2; ++r)
        for (int path = 0; path < 2; ++path) {
            const double t0 = now_ms();
            ggml_backend_graph_compute(be, c[path].gf);
            if (r >= 2) ts[path].push_back((now_ms() - t0) / reps);
        }
    double t_ms[2];
    std::vector<float> res[2];
    for (int path = 0; path < 2; ++path) {
        t_ms[path] = median(ts[path]);
        res[path].resize(ggml_nelements(outs[path]));
        ggml_backend_tensor_get(outs[path], res[path].data(), 0, ggml_nbytes(outs[path]));
    }
    const bool same = res[0].size() == res[1].size() &&
                      std::memcmp(res[0].data(), res[1].data(), res[0].size() * sizeof(float)) == 0;
    std::printf("S=%d L=%d n_kv=%d hd=%d heads=%d/%d: ggml masked %.3f ms, attn_rows %.3f ms, ratio %.2f, %s\n", S,
                o.L, n_kv, o.hd, o.n_head, o.n_head_kv, t_ms[0], t_ms[1], t_ms[0] / t_ms[1],
                same ? "bit-identical" : "DIFFERENT");
}

}  // namespace

int main(int argc, char** argv) {
    Opts o;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i], v = argv[i + 1];
        if (a == "-t") o.threads = std::atoi(v.c_str());
        else if (a == "-d") o.hd = std::atoi(v.c_str());
        else if (a == "-H") o.n_head = std::atoi(v.c_str());
        else if (a == "-K") o.n_head_kv = std::atoi(v.c_str());
        else if (a == "-L") o.L = std::atoi(v.c_str());
        else if (a == "-r") o.runs = std::atoi(v.c_str());
        else if (a == "-S") {
            o.seqs.clear();
            std::stringstream ss(v);
            for (std::string x; std::getline(ss, x, ',');) o.seqs.push_back(std::atoi(x.c_str()));
        } else {
            std::fprintf(stderr, "unknown option %s\n", a.c_str());
            return 2;
        }
    }
    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, o.threads);
    ggml_backend_cpu_set_use_ref(be, true);  // as batch_invariant runs ggml's attention
    for (int S : o.seqs) run_case(o, S, be);
    ggml_backend_free(be);
    return 0;
}
