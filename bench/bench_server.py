"""lanner serve vs llama.cpp's llama-server: N concurrent streaming clients, same GGUF, same flags.

    python bench/bench_server.py [--models smollm2,gemma3] [--clients 1,2,4,8] [--runs 3]
        [--requests 3] [--max-tokens 64] [--threads 2] [--ctx-size 4096] [--peer-bin PATH]
        [--lanner-adaptive-threads]

For each model and client count N, both servers are started once with N slots (`lanner serve
--parallel N` / `llama-server -np N`, flash attention, T threads, the same total context), warmed
with one request, then measured in alternating runs (the order flips run by run): N clients on
/v1/chat/completions, each streaming --requests chat requests one after the other (greedy,
max_tokens, a distinct prompt per request so no prefix cache helps beyond the template header).
Per run: completion tok/s over the wall time, TTFT p50/p99 (request sent -> first content
chunk), inter-token p50 (gaps between content chunks). Prints medians of the runs, ratios and
each server's memory at the end: PSS of its process tree (lanner: gunicorn arbiter + worker;
shared pages counted once: the figure to compare) and the RSS sum (counts them twice).
llama-server comes from bench/build_peers.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

import proc_mem  # bench/proc_mem.py (this script's folder is on sys.path)

PEER_BIN = Path.home() / ".cache/lanner-peers/llama.cpp-0.3.36/bin/llama-server"
TOPICS = ["a robot learning to paint", "why the sky is blue", "uses for a paperclip",
          "the water cycle", "how bread rises", "the rules of chess", "a trip to the moon",
          "how a bicycle stays upright", "the life of a honeybee", "why leaves change colour"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process on a free port, started in its own process group."""

    def __init__(self, kind: str, model: str, slots: int, args):
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if kind == "lanner":
            cmd = [sys.executable, "-m", "lanner.server.main", "--model", model, "--port", str(self.port),
                   "--parallel", str(slots), "--ctx-size", str(args.ctx_size),
                   "--max-queue", str(max(4, slots)), "--log-level", "warning"]
            if not args.lanner_adaptive_threads:  # else lanner's default: all CPUs, fewer while faster
                cmd += ["--threads", str(args.threads)]
        else:
            cmd = [str(args.peer_bin), "-m", model, "--port", str(self.port), "--host", "127.0.0.1",
                   "-np", str(slots), "-t", str(args.threads), "-tb", str(args.threads), "-c", str(args.ctx_size),
                   "-fa", "on", "-ngl", "0", "--no-webui"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{kind} exited with {self.proc.returncode}:\n"
                                 + b"".join(self._stderr[-30:]).decode(errors="replace"))
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"{kind} did not become healthy in 300 s")

    def memory(self) -> dict:
        """PSS / RSS / USS of the server's process tree (MiB): PSS counts shared pages once."""
        return proc_mem.tree_totals(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


_MODEL_IDS: dict[str, str] = {}


def model_id(url: str) -> str:
    """The server's own name for its model (lanner answers 404 to another name)."""
    if url not in _MODEL_IDS:
        _MODEL_IDS[url] = requests.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]
    return _MODEL_IDS[url]


def one_request(session, url: str, prompt: str, max_tokens: int) -> dict:
    """Stream one chat completion: tokens, TTFT (s), gaps between content chunks (s)."""
    body = {"model": model_id(url), "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    stamps, usage = [], None
    with session.post(url + "/v1/chat/completions", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
            if chunk.get("usage"):
                usage = chunk["usage"]
    tokens = usage["completion_tokens"] if usage else len(stamps)
    return {"tokens": tokens, "ttft": stamps[0] - t0 if stamps else None,
            "gaps": [b - a for a, b in zip(stamps, stamps[1:])]}


def workload(url: str, clients: int, n_req: int, max_tokens: int, tag: str) -> dict:
    """`clients` threads, each sending `n_req` requests in turn; aggregate figures of the run."""
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(n_req):  # a new connection per request: llama-server closes idle keep-alives
            s = requests.Session()
            prompt = (f"[{tag} {i}.{k}] Write a short paragraph about "
                      f"{TOPICS[(i * n_req + k) % len(TOPICS)]}.")
            try:
                with s:
                    r = one_request(s, url, prompt, max_tokens)
            except Exception as e:  # noqa: BLE001 - counted, not fatal
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    ths = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    gaps = sorted(g for r in results for g in r["gaps"])
    return {"tps": sum(r["tokens"] for r in results) / wall, "ttft_p50": pct(ttfts, 50),
            "ttft_p99": pct(ttfts, 99), "itl_p50": pct(gaps, 50), "errors": len(errors),
            "error_samples": errors[:3]}


def pct(xs: list, p: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def bench_model(name: str, path: str, args) -> None:
    keys = ("tps", "ttft_p50", "ttft_p99", "itl_p50")
    for n in args.clients:
        servers = {k: Server(k, path, n, args) for k in ("lanner", "llama-server")}
        try:
            for k, s in servers.items():  # warm-up (first graph builds, page cache)
                one_request(requests.Session(), s.url, "Say hello.", 8)
            res = {k: [] for k in servers}
            for run in range(args.runs):
                order = list(servers) if run % 2 == 0 else list(servers)[::-1]
                for k in order:
                    r = workload(servers[k].url, n, args.requests, args.max_tokens, f"{k} r{run}")
                    res[k].append(r)
                    print(f"  {name} c={n} run {run} {k:12s} {r['tps']:6.1f} tok/s  TTFT p50 "
                          f"{r['ttft_p50'] * 1e3:6.0f} p99 {r['ttft_p99'] * 1e3:6.0f} ms  ITL p50 "
                          f"{r['itl_p50'] * 1e3:5.1f} ms  err {r['errors']} {r['error_samples']}"
                          f"  load {load_avg()}", flush=True)
            mem = {k: s.memory() for k, s in servers.items()}
        finally:
            for s in servers.values():
                s.stop()
        med = {k: {m: statistics.median(r[m] for r in res[k]) for m in keys} for k in res}
        lan, peer = med["lanner"], med["llama-server"]
        print(f"| {name} | {n} | {lan['tps']:.1f} / {peer['tps']:.1f} ({lan['tps'] / peer['tps']:.2f}) | "
              f"{lan['ttft_p50'] * 1e3:.0f} / {peer['ttft_p50'] * 1e3:.0f} ({lan['ttft_p50'] / peer['ttft_p50']:.2f}) | "
              f"{lan['ttft_p99'] * 1e3:.0f} / {peer['ttft_p99'] * 1e3:.0f} | "
              f"{lan['itl_p50'] * 1e3:.1f} / {peer['itl_p50'] * 1e3:.1f} | "
              f"{mem['lanner']['pss']:.0f} / {mem['llama-server']['pss']:.0f} | "
              f"{mem['lanner']['rss']:.0f} / {mem['llama-server']['rss']:.0f} | {load_avg()} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3, help="requests per client per run")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lanner-adaptive-threads", action="store_true",
                    help="start lanner without --threads (its default: the CPUs it may use, fewer while "
                         "the measured step times say fewer are faster); llama-server keeps -t THREADS")
    ap.add_argument("--ctx-size", type=int, default=4096)
    ap.add_argument("--peer-bin", type=Path, default=PEER_BIN)
    args = ap.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if not args.peer_bin.exists():
        raise SystemExit(f"{args.peer_bin} missing: run bench/build_peers.sh first")
    from lanner.default_model import gemma3_path, smollm2_path

    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    print(f"bench_server: clients {args.clients}, {args.requests} requests each, max_tokens "
          f"{args.max_tokens}, threads {args.threads}, ctx {args.ctx_size}, runs {args.runs}, "
          f"{time.strftime('%Y-%m-%d %H:%M')} load {load_avg()}")
    print("| model | clients | tok/s lanner / llama-server (ratio) | TTFT p50 ms (ratio) | TTFT p99 ms "
          "| inter-token p50 ms | PSS MiB | RSS MiB (sum) | load after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        bench_model(name, str(paths[name]()), args)


if __name__ == "__main__":
    main()
