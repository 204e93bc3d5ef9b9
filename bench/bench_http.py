"""HTTP serving benchmark: N concurrent streaming clients on /v1/chat/completions for a fixed time.

Reports completion tokens/s (summed over clients), time to first token p50/p99, requests and
errors. With --model it starts `lanner serve` itself on a free port (and stops it after), and
with --peer direct it first runs the same workload straight on the engine in-process
(lanner.LLM, no HTTP), printing the HTTP/direct ratio, the cost of the server layer.

  python bench/bench_http.py --url http://127.0.0.1:8080 --clients 4 --seconds 20
  python bench/bench_http.py --model path/to/model.gguf --clients 4 --seconds 20 --peer direct
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import requests

PROMPTS = [
    "Write a short story about a robot learning to paint.",
    "Explain why the sky is blue to a ten year old.",
    "List five uses for a paperclip and explain each briefly.",
    "Describe the water cycle in a few sentences.",
]


@dataclass
class Tally:
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    ttft_s: list = field(default_factory=list)
    error_samples: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, tokens: int, ttft: float | None) -> None:
        with self.lock:
            self.tokens += tokens
            self.requests += 1
            if ttft is not None:
                self.ttft_s.append(ttft)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(what)


def http_client(url: str, model: str, max_tokens: int, deadline: float, i: int, tally: Tally) -> None:
    session = requests.Session()
    n = i
    while time.time() < deadline:
        body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}]}
        n += 1
        t0 = time.perf_counter()
        ttft, tokens = None, 0
        try:
            with session.post(url + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
                if r.status_code != 200:
                    tally.error(f"HTTP {r.status_code}: {r.text[:200]}")
                    time.sleep(0.2)
                    continue
                for line in r.iter_lines():
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError(chunk["error"])
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and ttft is None:
                        ttft = time.perf_counter() - t0
                    if chunk.get("usage") and not chunk.get("choices"):
                        tokens = chunk["usage"]["completion_tokens"]
        except Exception as e:  # noqa: BLE001 - a benchmark counts failures, it does not stop
            tally.error(f"{type(e).__name__}: {e}")
            continue
        tally.add(tokens, ttft)


def direct_client(llm, max_tokens: int, deadline: float, i: int, tally: Tally) -> None:
    from lanner.types import FinishEvent, GenerateRequest, SamplingParams

    n = i
    while time.time() < deadline:
        prompt = llm.chat_tokens([{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}])
        n += 1
        t0 = time.perf_counter()
        ttft = None
        try:
            stream = llm.engine.submit(GenerateRequest(
                prompt_tokens=prompt, max_tokens=max_tokens,
                sampling=SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                                        repeat_penalty=1.0)))
            for ev in stream:
                if isinstance(ev, FinishEvent):
                    tally.add(ev.usage.completion_tokens, ttft)
                elif ttft is None:
                    ttft = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            tally.error(f"{type(e).__name__}: {e}")
            time.sleep(0.2)


def run(target, clients: int, seconds: float, *args) -> tuple[Tally, float]:
    tally = Tally()
    deadline = time.time() + seconds
    t0 = time.perf_counter()
    threads = [threading.Thread(target=target, args=(*args, deadline, i, tally)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - t0


def pct(xs: list, p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(name: str, tally: Tally, elapsed: float) -> float:
    tps = tally.tokens / elapsed if elapsed > 0 else 0.0
    print(f"{name:>7}: {tally.requests:5d} requests, {tally.errors:3d} errors, "
          f"{tally.tokens:7d} tokens in {elapsed:6.1f} s = {tps:8.1f} tok/s; "
          f"TTFT p50 {pct(tally.ttft_s, 50) * 1e3:7.1f} ms  p99 {pct(tally.ttft_s, 99) * 1e3:7.1f} ms"
          + (f"  mean {statistics.mean(tally.ttft_s) * 1e3:7.1f} ms" if tally.ttft_s else ""))
    for e in tally.error_samples:
        print(f"         error: {e}")
    return tps


def start_server(args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "lanner.server.main", "--model", args.model, "--port", str(port),
           "--parallel", str(args.parallel), "--max-queue", str(max(args.clients, 4)),
           "--log-level", "warning"]
    if args.ctx_size:
        cmd += ["--ctx-size", str(args.ctx_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"lanner serve exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("lanner serve did not become healthy in 180 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", help="start `lanner serve --model MODEL` on a free port for the run")
    ap.add_argument("--model-name", default="", help="model field sent (default: the server's)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=4, help="engine slots when --model starts a server")
    ap.add_argument("--ctx-size", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="model CPU threads (0 = engine default)")
    ap.add_argument("--peer", choices=["none", "direct"], default="none",
                    help="also run the workload on lanner.LLM in-process (needs --model)")
    args = ap.parse_args()
    print(f"bench_http: {args.clients} streaming clients, {args.seconds:g} s, "
          f"max_tokens {args.max_tokens}")

    direct_tps = None
    if args.peer == "direct":
        if not args.model:
            raise SystemExit("--peer direct needs --model")
        from lanner.server.context import load_backend
        from lanner.server.settings import Settings

        # built exactly as the server builds it (same engine sizes)
        llm = load_backend(Settings(model=args.model, parallel=args.parallel,
                                    max_queue=max(args.clients, 4), ctx_size=args.ctx_size,
                                    threads=args.threads))
        tally, elapsed = run(direct_client, args.clients, args.seconds, llm, args.max_tokens)
        direct_tps = report("direct", tally, elapsed)
        close = getattr(llm, "close", None)
        if close:
            close()
        del llm

    proc = None
    url = args.url
    if args.model:
        proc, url = start_server(args)
    try:
        tally, elapsed = run(http_client, args.clients, args.seconds, url, args.model_name,
                             args.max_tokens)
        http_tps = report("http", tally, elapsed)
        if direct_tps:
            print(f"  ratio: http/direct tokens/s = {http_tps / direct_tps:.3f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
