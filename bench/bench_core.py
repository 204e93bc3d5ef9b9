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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
