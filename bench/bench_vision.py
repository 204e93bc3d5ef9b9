"""Image encode time: lanner's vision encoder vs llama.cpp's libmtmd on the same projector files.

    python bench/bench_vision.py [--threads 2] [--runs 3] [--repeats 3] [--siglip-layers 2] \
        [--lib /root/.cache/lanner-peers/llama.cpp-0.3.36/build/bin] [--sdist <llama-cpp-python sdist>]

Two projectors, both random weights in F16 (tests/tiny_mmproj.py): the tiny `gemma3` one of the
tests (32 px, 16 tokens) and a SigLIP-shaped one with Gemma 3's real shapes (896 px, patch 14,
width 1152, FFN 4304, 16 heads, 4x4 pooling to 256 tokens) but only --siglip-layers blocks of its
27 (shape cost, not quality: the time per block is what scales). Each run of each engine is its
own subprocess (the two load different libggml builds), engines alternate run by run; a run
loads the projector, encodes once to warm up, then times --repeats encodes of an image at the
input size (no resizing on either side): lanner `VisionEncoder.encode`, llama.cpp
`mtmd_encode_chunk`. Prints the median ms per image and lanner's time relative to llama.cpp's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "reference"))

SIGLIP = dict(image=896, patch=14, n_embd=1152, n_ff=4304, n_head=16, merge=4)

LANNER_WORKER = r"""
import json, sys, time
import numpy as np
from lanner import _core
job = json.loads(sys.argv[1])
enc = _core.VisionEncoder(_core.VisionModel(job["mmproj"]), n_threads=job["threads"])
s = enc_size = _core.VisionModel(job["mmproj"]).image_size
px = np.random.default_rng(0).uniform(-1, 1, (3, s, s)).astype(np.float32)
enc.encode(px)
times = []
for _ in range(job["repeats"]):
    t0 = time.perf_counter(); enc.encode(px); times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""

LLAMA_WORKER = r"""
import ctypes, json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from llama_cpp_mtmd_worker import _bindings, _chunks
job = json.loads(sys.argv[1])
L, M = _bindings(job["py_dir"])
L.llama_backend_init()
mp = L.llama_model_default_params(); mp.n_gpu_layers = 0
model = L.llama_model_load_from_file(job["model"].encode(), mp)
cp = M.mtmd_context_params_default()
cp.use_gpu, cp.n_threads, cp.print_timings, cp.warmup = False, job["threads"], False, False
ctx = M.mtmd_init_from_file(job["mmproj"].encode(), model, cp)
s = job["size"]
img = np.random.default_rng(0).integers(0, 256, (s, s, 3)).astype(np.uint8)
chunks, _ = _chunks(M, ctx, "<__media__>", img)
chunk = next(M.mtmd_input_chunks_get(chunks, i) for i in range(M.mtmd_input_chunks_size(chunks))
             if M.mtmd_input_chunk_get_type(M.mtmd_input_chunks_get(chunks, i)) != 0)
assert M.mtmd_encode_chunk(ctx, chunk) == 0
times = []
for _ in range(job["repeats"]):
    t0 = time.perf_counter(); assert M.mtmd_encode_chunk(ctx, chunk) == 0; times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def _run(engine: str, job: dict, lib: str) -> list[float]:
    if engine == "lanner":
        cmd, env = [sys.executable, "-c", LANNER_WORKER, json.dumps(job)], None
    else:
        import os

        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        env.update(LLAMA_CPP_LIB_PATH=lib, MTMD_CPP_LIB=lib, LD_LIBRARY_PATH=lib)  # this subprocess only
        cmd = [sys.executable, "-c", LLAMA_WORKER, json.dumps(job), str(ROOT / "tests" / "reference")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{engine} run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    import check_vision_llama_cpp as chk
    import tiny_mmproj as tm
    import tiny_vlm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--siglip-layers", type=int, default=2)
    ap.add_argument("--lib", default="/root/.cache/lanner-peers/llama.cpp-0.3.36/build/bin")
    ap.add_argument("--sdist", default="/tmp/fa_lcp/llama_cpp_python-0.3.36.tar.gz")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        py_dir = chk.sdist_python(args.sdist, work / "sdist")
        text = tiny_vlm.write_tiny_gemma3(work / "text.gguf")
        cases = {
            "tiny gemma3 (32 px, 16 tokens)": (tm.write_tiny_mmproj(
                work / "tiny.gguf", "gemma3", n_embd_out=tiny_vlm.N_EMBD, weight_type="F16"), 32),
            f"SigLIP-shaped, {args.siglip_layers}/27 blocks (896 px, 256 tokens)": (tm.write_tiny_mmproj(
                work / "siglip.gguf", "gemma3", n_embd_out=tiny_vlm.N_EMBD, weight_type="F16",
                shape={**SIGLIP, "n_layer": args.siglip_layers}), SIGLIP["image"]),
        }
        print(f"threads {args.threads}, {args.runs} alternating runs x {args.repeats} encodes; ms per image (median)")
        print(f"| projector | lanner ms | llama.cpp ms | lanner / llama.cpp |\n|---|---|---|---|")
        for name, (mmproj, size) in cases.items():
            job = {"mmproj": mmproj, "model": text, "py_dir": py_dir, "size": size,
                   "threads": args.threads, "repeats": args.repeats}
            t = {"lanner": [], "llama.cpp": []}
            for _ in range(args.runs):
                for engine in t:
                    t[engine] += _run(engine, job, args.lib)
            a, b = (1000 * statistics.median(t[e]) for e in ("lanner", "llama.cpp"))
            print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
