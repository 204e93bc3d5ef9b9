"""Does a long-running engine grow? RSS over 1,000 requests on the default model.

    python bench/bench_memory.py [--requests 1000] [--clients 4] [--threads 2]

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


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=4)
    args = ap.parse_args()

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
