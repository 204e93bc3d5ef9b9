"""Does a long-running engine grow? RSS over 1,000 requests on the default model. And, with
--server, what `lanner serve` holds against its weights + KV cache.

    python bench/bench_memory.py [--requests 1000] [--clients 4] [--threads 2]
    python bench/bench_memory.py --server [--models smollm2,gemma3] [--clients 4] [--requests 3]

Submits --requests short chat requests (distinct prompts, some sharing a prefix so the prefix
cache keeps, reuses and evicts sequences; a few aborted mid-stream) from --clients threads,
and prints the process RSS (VmRSS, MiB) every 100 requests. The KV cache and compute buffers
are sized once, so after warm-up the RSS should stay flat; the last line prints the growth
from request 100 to the end.
"""

from __future__ import annotations

import argparse
import threading
import time

import proc_mem  # bench/proc_mem.py (this script's folder is on sys.path)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def weights_and_kv_mib(path: str, n_ctx: int) -> tuple[float, float]:
    """The model's weight bytes and its f16 KV cache over n_ctx cells, MiB."""
    from lanner import _core

    m = _core.Model(path)
    meta, arch = m.metadata, m.arch
    head = m.n_embd // m.n_head
    k = int(meta.get(f"{arch}.attention.key_length", head))
    v = int(meta.get(f"{arch}.attention.value_length", head))
    kv = m.n_layer * n_ctx * m.n_head_kv * (k + v) * 2
    return m.size_bytes / 2**20, kv / 2**20


def print_server_memory(label: str, pid: int, model: str, base: float) -> None:
    rows = proc_mem.tree(pid)
    for k, r in enumerate(rows):
        print(f"  {label:6s} {'arbiter' if k == 0 else 'worker':8s} pid {r['pid']:7d}  RSS {r['rss']:6.1f}  PSS {r['pss']:6.1f}  "
              f"USS {r['uss']:6.1f}  anon {r['anon']:6.1f}")
    worker = rows[-1]["pid"]
    kinds = proc_mem.split(worker, model)
    print(f"  {label:6s} worker PSS by kind: " + ", ".join(f"{k} {v['pss']:.1f}" for k, v in sorted(kinds.items())))
    pss, rss = sum(r["pss"] for r in rows), sum(r["rss"] for r in rows)
    print(f"  {label:6s} tree PSS {pss:.1f} MiB = {pss / base:.2f}x weights + KV ({base:.1f}); "
          f"RSS sum {rss:.1f} = {rss / base:.2f}x", flush=True)


def server_main(args) -> None:
    from types import SimpleNamespace

    from bench_server import Server, load_avg, workload
    from lanner.default_model import gemma3_path, smollm2_path

    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    for name in args.models.split(","):
        path = str(paths[name]())
        w, kv = weights_and_kv_mib(path, args.ctx_size)
        print(f"{name}: weights {w:.1f} MiB + KV {kv:.1f} MiB ({args.ctx_size} cells) = {w + kv:.1f} MiB")
        srv = Server("lanner", path, args.clients, SimpleNamespace(threads=args.threads, ctx_size=args.ctx_size,
                                                                 lanner_adaptive_threads=False))
        try:
            time.sleep(2)  # the worker settles after /health turns 200
            print_server_memory("idle", srv.proc.pid, path, w + kv)
            r = workload(srv.url, args.clients, args.requests, args.max_tokens, "mem")
            print(f"  ran {args.clients} clients x {args.requests} requests: {r['tps']:.1f} tok/s, "
                  f"{r['errors']} errors, load {load_avg()}")
            print_server_memory("after", srv.proc.pid, path, w + kv)
        finally:
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="default 1000 (3 per client with --server)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=None, help="default 4 (64 with --server)")
    ap.add_argument("--server", action="store_true", help="measure `lanner serve` instead")
    ap.add_argument("--models", default="smollm2,gemma3", help="with --server")
    ap.add_argument("--ctx-size", type=int, default=4096, help="with --server")
    args = ap.parse_args()
    if args.server:
        args.max_tokens = args.max_tokens or 64
        args.requests = args.requests or 3
        server_main(args)
        return
    args.max_tokens = args.max_tokens or 4
    args.requests = args.requests or 1000

    import lanner

    llm = lanner.LLM(n_ctx=2048, n_threads=args.threads, n_parallel=args.clients)
    print(f"model loaded: RSS {rss_mib():.1f} MiB", flush=True)
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "samples": {}}
    t0 = time.time()

    def client() -> None:
        while True:
            with lock:
                i = state["next"]
                if i >= args.requests:
                    return
                state["next"] += 1
            topic = ["the sea", "a mountain", "a city", "the stars", "a forest"][i % 5]
            msgs = [{"role": "system", "content": f"You write one sentence about {topic}."},
                    {"role": "user", "content": f"Request number {i}: tell me something new."}]
            for n, chunk in enumerate(llm.chat(msgs, args.max_tokens, stream=True)):
                if i % 10 == 9 and n == 1:  # every 10th request: the client goes away mid-stream
                    break
            with lock:
                state["done"] += 1
                if state["done"] % 100 == 0:
                    state["samples"][state["done"]] = rss_mib()
                    print(f"{state['done']:5d} requests  RSS {state['samples'][state['done']]:.1f} MiB  "
                          f"{time.time() - t0:.0f} s", flush=True)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = llm.engine.stats()
    llm.close()
    samples = state["samples"]
    first, last = min(samples), max(samples)
    print(f"processed {s.total_processed} requests, {s.total_completion_tokens} tokens generated, "
          f"{s.total_cached_tokens} prompt tokens from the prefix cache")
    print(f"RSS growth from request {first} to {last}: {samples[last] - samples[first]:+.1f} MiB")


if __name__ == "__main__":
    main()
