// lanner-bench-decode: prefill and single-token decode speed of one GGUF model through lanner_core.
// Owns nothing of the core: it loads the model (lanner::Model), makes one Context with one
// sequence, prefills P tokens (pseudo-random ids in [0, n_vocab), seeded), then runs W untimed
// and R timed decode steps, each feeding back the argmax of the previous logits (greedy), so
// every step is one Context::decode of one token. Reports medians: prefill ms and tokens/s over
// `-n` prefills (KV cleared between), decode ms/token and tokens/s, and weight GB/s per step;
// also how much CPU other processes used meanwhile (a shared machine: see cpu_load.h).
//
//   lanner-bench-decode MODEL.gguf [-t threads] [-p prompt_tokens] [-r steps] [-w warmup] [-n prefills]
//                      [-c kv_cells]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "context.h"
#include "cpu_load.h"
#include "ggml-backend.h"
#include "model.h"

// ---- structs --------------------------------------------------------------------------------

struct Args {
    std::string model;
    int n_threads = 2;
    int n_prompt = 128;   // tokens prefilled in one decode call
    int n_steps = 64;     // timed single-token decode steps
    int n_warmup = 2;     // untimed decode steps before them (the first builds the step graph)
    int n_prefill = 3;    // prefill repetitions (median reported)
    int n_ctx = 4096;     // KV cells, as ContextParams' default (what `lanner serve` allocates)
};

// The tokens of one decode call, all in sequence 0.
struct SeqBatch {
    std::vector<int32_t> tokens, pos, seq;  // [n]
    std::vector<uint8_t> want;              // [n]; only the last entry asks for logits

    lanner::Batch view(int pos0) {
        const int n = (int)tokens.size();
        pos.resize(n), seq.assign(n, 0), want.assign(n, 0);
        for (int i = 0; i < n; ++i) pos[i] = pos0 + i;
        want[n - 1] = 1;
        return lanner::Batch{n, tokens.data(), pos.data(), seq.data(), want.data()};
    }
};

// ---- arguments ------------------------------------------------------------------------------

static void usage(const char* argv0) {
    std::printf(
        "usage: %s MODEL.gguf [options]\n"
        "  -t N   CPU threads (default 2)\n"
        "  -p N   prompt tokens prefilled before decoding (default 128)\n"
        "  -r N   timed decode steps, one token each (default 64)\n"
        "  -w N   untimed warm-up decode steps (default 2)\n"
        "  -n N   prefill repetitions, KV cleared between (default 3)\n"
        "  -c N   KV cache cells (default 4096; at least p + w + r)\n",
        argv0);
}

static bool parse_args(int argc, char** argv, Args& a) {
    for (int i = 1; i < argc; ++i) {
        std::string o = argv[i];
        auto val = [&]() -> int {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", o.c_str()); std::exit(2); }
            return std::atoi(argv[++i]);
        };
        if (o == "-h" || o == "--help") { usage(argv[0]); std::exit(0); }
        else if (o == "-t") a.n_threads = val();
        else if (o == "-p") a.n_prompt = val();
        else if (o == "-r") a.n_steps = val();
        else if (o == "-w") a.n_warmup = val();
        else if (o == "-n") a.n_prefill = val();
        else if (o == "-c") a.n_ctx = val();
        else if (!o.empty() && o[0] == '-') { std::fprintf(stderr, "unknown option '%s'\n", o.c_str()); return false; }
        else if (a.model.empty()) a.model = o;
        else { std::fprintf(stderr, "one model path only\n"); return false; }
    }
    return !a.model.empty() && a.n_threads > 0 && a.n_prompt > 0 && a.n_steps > 0 && a.n_warmup >= 0 &&
           a.n_prefill > 0 && a.n_ctx >= a.n_prompt + a.n_warmup + a.n_steps;
}

// ---- timing --------------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t h = v.size() / 2;
    return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// One Context::decode; appends its wall time (ms) to `ms`.
static void timed_decode(lanner::Context& ctx, const lanner::Batch& b, std::vector<double>& ms) {
    const auto t0 = Clock::now();
    ctx.decode(b);
    ms.push_back(ms_since(t0));
}

static int32_t argmax(const float* row, int n) {  // row: [n_vocab] logits
    return (int32_t)(std::max_element(row, row + n) - row);
}

// ---- prefill, decode ------------------------------------------------------------------------

struct Timings {
    std::vector<double> ms;   // per decode call
    double others_pct = -1;   // CPU other processes used meanwhile, % of the machine
};

// `n_rep` prefills of `prompt` at positions 0.., the cache cleared before each. Returns the
// argmax of the last prefill's logits.
static int32_t bench_prefill(lanner::Context& ctx, SeqBatch& prompt, int n_rep, Timings& t) {
    int32_t next = 0;
    const CpuSample cpu0 = cpu_sample();
    for (int rep = 0; rep < n_rep; ++rep) {
        ctx.kv().clear();
        timed_decode(ctx, prompt.view(0), t.ms);
        next = argmax(ctx.logits(), ctx.model().hp.n_vocab);
    }
    t.others_pct = cpu_others_pct(cpu0, cpu_sample());
    return next;
}

// n_warmup untimed then n_steps timed single-token decodes from position pos0, greedy.
static void bench_steps(lanner::Context& ctx, int32_t next, int pos0, int n_warmup, int n_steps, Timings& t) {
    SeqBatch step;
    step.tokens.assign(1, 0);
    std::vector<double> warmup_ms;
    const CpuSample cpu0 = cpu_sample();
    for (int i = 0; i < n_warmup + n_steps; ++i) {
        step.tokens[0] = next;
        timed_decode(ctx, step.view(pos0 + i), i < n_warmup ? warmup_ms : t.ms);
        next = argmax(ctx.logits(), ctx.model().hp.n_vocab);
    }
    t.others_pct = cpu_others_pct(cpu0, cpu_sample());
}

static std::string pct(double p) { return p < 0 ? "unknown" : std::to_string((int)std::lround(p)) + "%"; }

// ---- main: load, prefill, decode, report -----------------------------------------------------

static int run(const Args& a) {
    const auto t_load = Clock::now();
    auto model = std::make_shared<lanner::Model>(a.model);
    const double load_ms = ms_since(t_load);
    const auto& hp = model->hp;

    lanner::ContextParams cp;  // n_batch, KV types: the defaults
    cp.n_ctx = a.n_ctx;        // one sequence uses P + W + R of these cells; the rest stay free
    cp.n_seq_max = 1;
    cp.n_threads = a.n_threads;
    lanner::Context ctx(model, cp);

    const double w_bytes = (double)model->weights_bytes;
    std::printf("model   %s\n", a.model.c_str());
    std::printf("        arch %s, %.1fM params, %.1f MiB weights, n_vocab %d, n_layer %d, n_embd %d; load %.0f ms\n",
                model->arch_name.c_str(), model->n_params / 1e6, w_bytes / 1048576.0, hp.n_vocab, hp.n_layer,
                hp.n_embd, load_ms);
    std::printf("device  %s, %d threads; KV %s/%s, n_ctx %d cells, n_batch %d\n", ctx.device_name(), ctx.n_threads(),
                ggml_type_name(cp.type_k), ggml_type_name(cp.type_v), cp.n_ctx, ctx.params().n_batch);

    SeqBatch prompt;  // seeded pseudo-random valid token ids
    std::mt19937 rng(42);
    std::uniform_int_distribution<int32_t> tok(0, hp.n_vocab - 1);
    for (int i = 0; i < a.n_prompt; ++i) prompt.tokens.push_back(tok(rng));

    Timings pre, dec;
    const int32_t next = bench_prefill(ctx, prompt, a.n_prefill, pre);
    bench_steps(ctx, next, a.n_prompt, a.n_warmup, a.n_steps, dec);

    const double p_ms = median(pre.ms);
    std::printf("prefill %d tokens: median %.1f ms (min %.1f) over %d runs = %.1f tokens/s; "
                "others used %s of the CPU\n",
                a.n_prompt, p_ms, *std::min_element(pre.ms.begin(), pre.ms.end()), a.n_prefill,
                a.n_prompt / (p_ms * 1e-3), pct(pre.others_pct).c_str());
    const double d_ms = median(dec.ms);
    const int pos0 = a.n_prompt + a.n_warmup;
    std::printf("decode  %d steps at positions %d..%d: median %.2f ms/token (min %.2f, max %.2f) = %.1f tokens/s, "
                "%.1f GB/s of weights; others used %s of the CPU\n",
                a.n_steps, pos0, pos0 + a.n_steps - 1, d_ms, *std::min_element(dec.ms.begin(), dec.ms.end()),
                *std::max_element(dec.ms.begin(), dec.ms.end()), 1e3 / d_ms, w_bytes / (d_ms * 1e-3) * 1e-9,
                pct(dec.others_pct).c_str());
    return 0;
}

int main(int argc, char** argv) {
    Args a;
    if (!parse_args(argc, argv, a)) { usage(argv[0]); return 2; }
    try {
        return run(a);
    } catch (const std::exception& e) {  // ModelLoadError, bad parameters, allocation failures
        std::fprintf(stderr, "lanner-bench-decode: %s\n", e.what());
        return 1;
    }
}
