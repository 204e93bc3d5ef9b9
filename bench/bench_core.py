"""Prefill and decode speed of lanner vs llama-cpp-python on the same GGUF files and threads.

    python bench/bench_core.py [--threads 2] [--runs 5] [--prompt 512] [--gen 128] [--models smollm2,gemma3]
    python bench/bench_core.py --models qwen3moe-tiny,gpt-oss-tiny   # MoE dispatch cost

Each run of each engine happens in its own subprocess (the two cannot share a process: both load
a libggml-base.so.0 with different symbols), engines alternate run by run, and each run uses a
different prompt so no prefix cache helps. Both go through their public Python generation API
with greedy sampling: lanner `LLM.generate(ids, stream=True, temperature=0, ignore_eos=True)`,
llama.cpp `Llama.generate(ids, temp=0)`. prefill tok/s = prompt tokens / time to the first token;
decode tok/s = (gen - 1) / time from the first to the last token. Prints medians and ratios.
lanner runs with flash attention and batch invariance (its defaults); --softmax-attention adds a
lanner-softmax run, --no-batch-invariant a lanner-variant run (batch_invariant=False).

    python bench/bench_core.py --llama-bench [PATH]   # vs llama.cpp's llama-bench (pp512, tg128)

With --llama-bench the peer is llama.cpp's own `llama-bench` (from bench/build_peers.sh; flash
attention on, same threads, one repetition per run after its warm-up) and lanner runs the same
test on its core (`_core.Context.decode`, no sampling, like llama-bench): pp = one decode call
of `--prompt` random tokens into an empty cache, tg = `--gen` single-token decodes from an empty
cache, each after one warm-up of the same shape. The two alternate run by run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import json, sys, time
engine, path, threads, n_prompt, n_gen, run, fa, n_ids, inv = sys.argv[1:10]
threads, n_prompt, n_gen, run = int(threads), int(n_prompt), int(n_gen), int(run)
prompt = [100 + (run * 7919 + i * 104729) % int(n_ids) for i in range(n_prompt)]  # distinct per run
stamps = []
if engine == "lanner":
    import lanner
    llm = lanner.LLM(path, n_ctx=1024, n_threads=threads, n_parallel=1, flash_attn=fa == "1",
                     batch_invariant=inv == "1")
    t0 = time.perf_counter()
    for ch in llm.generate(prompt, max_tokens=n_gen, temperature=0, ignore_eos=True, stream=True):
        if ch.token_ids:
            stamps.append(time.perf_counter())
    llm.close()
else:
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    t0 = time.perf_counter()
    for tok in llm.generate(prompt, temp=0.0, top_k=1):
        stamps.append(time.perf_counter())
        if len(stamps) == n_gen:
            break
assert len(stamps) == n_gen, len(stamps)
print(json.dumps({"prefill": n_prompt / (stamps[0] - t0), "decode": (n_gen - 1) / (stamps[-1] - stamps[0])}))
"""


CORE_WORKER = r"""
import json, sys, time
import numpy as np
from lanner import _core
path, threads, n_prompt, n_gen, run, inv = sys.argv[1:7]
threads, n_prompt, n_gen, run = int(threads), int(n_prompt), int(n_gen), int(run)
model = _core.Model(path)
ctx = _core.Context(model, n_ctx=max(n_prompt, n_gen) + 64, n_batch=max(n_prompt, 1), n_seq_max=1,
                    n_threads=threads, batch_invariant=inv == "1")
rng = np.random.default_rng(run)
def pp():
    toks = rng.integers(100, model.n_vocab - 100, n_prompt).astype(np.int32)
    want = np.zeros(n_prompt, np.bool_); want[-1] = True
    ctx.kv_clear()
    t0 = time.perf_counter()
    ctx.decode(toks, np.arange(n_prompt, dtype=np.int32), np.zeros(n_prompt, np.int32), want)
    return n_prompt / (time.perf_counter() - t0)
def tg():
    ctx.kv_clear()
    one = np.zeros(1, np.int32); yes = np.ones(1, np.bool_)
    t0 = time.perf_counter()
    for i in range(n_gen):
        ctx.decode(np.array([int(rng.integers(100, 20000))], np.int32), np.array([i], np.int32), one, yes)
    return n_gen / (time.perf_counter() - t0)
pp(); r_pp = pp()
tg(); r_tg = tg()
print(json.dumps({"prefill": r_pp, "decode": r_tg}))
"""

LLAMA_BENCH = Path.home() / ".cache/lanner-peers/llama.cpp-0.3.36/bin/llama-bench"


def llama_bench_run(path: str, args) -> dict:
    """One llama-bench repetition of pp and tg (after its own warm-up): tok/s of each."""
    out = subprocess.run([str(args.llama_bench), "-m", path, "-t", str(args.threads), "-p", str(args.prompt),
                          "-n", str(args.gen), "-fa", "1", "-r", "1", "-o", "json"],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    get = lambda key: next(r["avg_ts"] for r in rows if r[key] > 0)  # noqa: E731
    return {"prefill": get("n_prompt"), "decode": get("n_gen")}


TINY_MOE = {"qwen3moe-tiny": "qwen3moe", "gpt-oss-tiny": "gpt-oss"}  # tests/tiny_gguf.py, F16


def model_paths(names: list[str], tmp: str) -> dict[str, str]:
    """name -> GGUF path; the tiny MoE models (2 layers, n_embd 32, 4 experts, 2 used) are
    written into `tmp`: at that size a token's cost is the per-op dispatch (router, top-k,
    mul_mat_id), which is what their rows show."""
    from lanner.default_model import gemma3_path, smollm2_path

    table = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    out = {}
    for n in names:
        if n in TINY_MOE:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from tiny_gguf import write_tiny_arch

            out[n] = write_tiny_arch(Path(tmp) / f"{n}.gguf", TINY_MOE[n], weight_type="F16")
        else:
            out[n] = str(table[n]())
    return out


def one_run(engine: str, path: str, args, run: int) -> dict:
    if engine == "llama-bench":
        return llama_bench_run(path, args)
    if engine == "lanner-core":
        out = subprocess.run([sys.executable, "-c", CORE_WORKER, path, str(args.threads), str(args.prompt),
                              str(args.gen), str(run), "0" if args.no_batch_invariant else "1"],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    fa = "0" if engine == "lanner-softmax" else "1"
    inv = "0" if engine == "lanner-variant" else "1"
    engine = "lanner" if engine.startswith("lanner") else engine
    n_ids = 300 if Path(path).stem in TINY_MOE else 20000  # prompt ids in [100, 100 + n_ids)
    out = subprocess.run([sys.executable, "-c", WORKER, engine, path, str(args.threads), str(args.prompt),
                          str(args.gen), str(run), fa, str(n_ids), inv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--softmax-attention", action="store_true",
                    help="also run lanner with flash_attn=False (softmax(KQ)V over a transposed V cache)")
    ap.add_argument("--no-batch-invariant", action="store_true",
                    help="also run lanner with batch_invariant=False (as 'lanner-variant': ggml's "
                         "shape-dependent attention kernels)")
    ap.add_argument("--llama-bench", nargs="?", type=Path, const=LLAMA_BENCH, default=None,
                    help="compare lanner's core with llama.cpp's llama-bench (default path: the "
                         "bench/build_peers.sh cache); with --no-batch-invariant lanner runs variant")
    args = ap.parse_args()
    if args.llama_bench:
        run_vs_llama_bench(args)
        return
    engines = ["lanner"] + (["lanner-softmax"] if args.softmax_attention else [])
    engines = engines + (["lanner-variant"] if args.no_batch_invariant else [])
    try:
        import llama_cpp  # noqa: F401
        engines.append("llama.cpp")
    except ImportError:
        print("llama-cpp-python not installed (pip install '.[bench]'): lanner only")
    print(f"threads={args.threads} prompt={args.prompt} gen={args.gen} runs={args.runs} "
          f"date={time.strftime('%Y-%m-%d')}")
    tmp = tempfile.mkdtemp()
    for name, path in model_paths(args.models.split(","), tmp).items():
        res = {e: [] for e in engines}
        for run in range(args.runs):
            for e in engines:
                res[e].append(one_run(e, path, args, run))
        med = {e: {k: statistics.median(r[k] for r in res[e]) for k in ("prefill", "decode")} for e in engines}
        for k in ("prefill", "decode"):
            line = f"{name:8s} {k:8s} " + "  ".join(f"{e} {med[e][k]:7.1f}" for e in engines) + " tok/s"
            if "llama.cpp" in med:
                line += "  ratio " + " ".join(f"{e}/llama.cpp {med[e][k] / med['llama.cpp'][k]:.2f}"
                                              for e in engines if e != "llama.cpp")
            print(line, flush=True)


def run_vs_llama_bench(args) -> None:
    import os

    engines = ["lanner-core", "llama-bench"]
    print(f"vs llama-bench: threads={args.threads} pp{args.prompt} tg{args.gen} runs={args.runs} "
          f"batch_invariant={not args.no_batch_invariant} {time.strftime('%Y-%m-%d %H:%M')} "
          f"load {os.getloadavg()[0]:.1f}")
    tmp = tempfile.mkdtemp()
    for name, path in model_paths(args.models.split(","), tmp).items():
        res = {e: [] for e in engines}
        for run in range(args.runs):
            for e in (engines if run % 2 == 0 else engines[::-1]):
                res[e].append(one_run(e, path, args, run))
            print(f"  {name} run {run}: " + "  ".join(f"{e} pp {res[e][-1]['prefill']:.1f} tg "
                                                       f"{res[e][-1]['decode']:.1f}" for e in engines), flush=True)
        med = {e: {k: statistics.median(r[k] for r in res[e]) for k in ("prefill", "decode")} for e in engines}
        for k, label in (("prefill", f"pp{args.prompt}"), ("decode", f"tg{args.gen}")):
            a, b = med["lanner-core"][k], med["llama-bench"][k]
            print(f"| {name} | {label} | {a:.1f} | {b:.1f} | {a / b:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
