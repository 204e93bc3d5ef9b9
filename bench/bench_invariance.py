"""Cost of batch invariance in the native core: prefill and decode with batch_invariant on vs off.

    python bench/bench_invariance.py [--runs 5] [--threads 1] [--models smollm2,gemma3] [--clock cpu|wall]

Each run is a subprocess with a fresh `_core.Context` (n_ctx 1024, n_batch 512): a 512-token
prompt of distinct ids in one decode call (prefill), then 64 greedy single-token steps over
512+ cells (decode). Modes alternate run by run; medians and the on/off ratio are printed.
--clock cpu (default) times with the process's CPU time: on a shared, oversubscribed machine it
moves far less than wall time, and with 1 thread no CPU is spent spinning at barriers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np
from lanner import _core
path, inv, threads, clock, run = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
now = time.process_time if clock == "cpu" else time.perf_counter
model = _core.Model(path)
ctx = _core.Context(model, n_ctx=1024, n_batch=512, n_threads=threads, n_seq_max=1, batch_invariant=inv)
prompt = np.asarray([100 + (run * 7919 + i * 104729) % 20000 for i in range(512)], np.int32)
def step(toks, p0):
    n = len(toks)
    want = np.zeros(n, np.bool_); want[-1] = True
    return int(np.argmax(ctx.decode(toks, np.arange(p0, p0 + n, dtype=np.int32), np.zeros(n, np.int32), want)[-1]))
step(prompt[:8], 0); ctx.kv_clear()  # warm-up
t0 = now(); tok = step(prompt, 0); t_prefill = now() - t0
times = []
for i in range(64):
    t0 = now(); tok = step(np.asarray([tok], np.int32), 512 + i); times.append(now() - t0)
print(json.dumps({"prefill": 512 / t_prefill, "decode": 1 / sorted(times)[len(times) // 2]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    from lanner.default_model import gemma3_path, smollm2_path

    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    print(f"threads={args.threads} runs={args.runs} clock={args.clock}; tok/s, medians")
    for name in args.models.split(","):
        path = str(paths[name]())
        res: dict[str, list[dict]] = {"on": [], "off": []}
        for run in range(args.runs):
            for mode in ("on", "off"):
                out = subprocess.run([sys.executable, "-c", WORKER, path, "1" if mode == "on" else "0",
                                      str(args.threads), args.clock, str(run)],
                                     capture_output=True, text=True, check=True)
                res[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for k in ("prefill", "decode"):
            on = statistics.median(r[k] for r in res["on"])
            off = statistics.median(r[k] for r in res["off"])
            print(f"{name:8s} {k:8s} invariant {on:7.1f}  not invariant {off:7.1f}  ratio {on / off:.2f}  "
                  f"(runs on: {', '.join(f'{r[k]:.0f}' for r in res['on'])}; "
                  f"off: {', '.join(f'{r[k]:.0f}' for r in res['off'])})", flush=True)


if __name__ == "__main__":
    main()
