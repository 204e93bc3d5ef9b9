"""Soak: a mixed load against `lanner serve` for a fixed time, counting what must stay zero.

Clients (2x the parallel slots by default) send, in a loop, requests in the three dialects,
streamed and not; 10% of them disconnect (mid-stream, or before a non-streamed reply)
and 10% are invalid (they must get a 4xx).
Counted: requests, unexpected statuses (a valid request not 200, or an invalid one not 4xx;
503 with Retry-After is the queue's answer and counted apart), truncated streams (no
terminator: `[DONE]`, `done: true`, or a finishReason), and the worker's RSS every 100
requests, from which the slope in MB per 100 requests is fitted.

Run: python bench/soak.py --minutes 30            (starts lanner serve on SmolLM2 itself)
     python bench/soak.py --url http://127.0.0.1:8080 --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

USER = [{"role": "user", "content": "Tell me a short fact about the sea."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_rss_mb(arbiter_pid: int) -> float:
    kids = Path(f"/proc/{arbiter_pid}/task/{arbiter_pid}/children").read_text().split()
    for line in Path(f"/proc/{kids[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def request_for(rng: random.Random, model: str) -> tuple[str, dict, bool, str]:
    """(path, body, stream, dialect) of a valid request."""
    dialect = rng.choice(("openai", "ollama", "gemini"))
    stream = rng.random() < 0.5
    n = rng.choice((8, 16, 32))
    if dialect == "openai":
        return "/v1/chat/completions", {"model": model, "messages": USER, "max_tokens": n,
                                        "stream": stream}, stream, dialect
    if dialect == "ollama":
        return "/api/chat", {"model": model, "messages": USER, "stream": stream,
                             "options": {"num_predict": n}}, stream, dialect
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return (f"/v1beta/models/{model}:{action}",
            {"contents": [{"role": "user", "parts": [{"text": USER[0]["content"]}]}],
             "generationConfig": {"maxOutputTokens": n}}, stream, dialect)


SPOIL = {  # per dialect: fields it reads, each with values it must refuse
    "openai": {"messages": ("x", [1, 2], []), "temperature": ("hot", -5), "max_tokens": (0, "many")},
    "ollama": {"messages": ("x", [1, 2]), "options": ("x", {"temperature": "hot"}, {"num_predict": 0})},
    "gemini": {"contents": (5, []), "generationConfig": ("x", {"topK": "a"}, {"candidateCount": 3})},
}


def spoil(body: dict, dialect: str, rng: random.Random) -> dict:
    """An invalid variant: a field the dialect reads, with a wrong type or value."""
    key, values = rng.choice(list(SPOIL[dialect].items()))
    return {**body, key: rng.choice(values)}


def terminated(dialect: str, text: str) -> bool:
    if dialect == "openai":
        return text.rstrip().endswith("data: [DONE]")
    if dialect == "ollama":
        last = json.loads(text.strip().splitlines()[-1])
        return bool(last.get("done")) or "error" in last
    events = [json.loads(l[6:]) for l in text.splitlines() if l.startswith("data: {")]
    return bool(events) and ("error" in events[-1] or
                             "finishReason" in events[-1].get("candidates", [{}])[0])


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = self.unexpected = self.truncated = self.busy = self.disconnects = 0
        self.examples: list[str] = []

    def add(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def client(url: str, model: str, t_end: float, seed: int, st: Stats) -> None:
    rng = random.Random(seed)
    while time.time() < t_end:
        path, body, stream, dialect = request_for(rng, model)
        roll = rng.random()
        invalid, disconnect = roll < 0.1, 0.1 <= roll < 0.2  # 10% of ALL requests each
        try:
            if invalid:
                r = requests.post(url + path, json=spoil(body, dialect, rng), timeout=60)
                ok = 400 <= r.status_code < 500
            elif disconnect and stream:
                with requests.post(url + path, json=body, stream=True, timeout=60) as r:
                    next(r.iter_content(64), None)  # read a little, then leave
                st.add(disconnects=1)
                ok = r.status_code in (200, 503)
            elif disconnect:  # a non-streamed request whose client gives up before the reply
                st.add(disconnects=1)
                try:
                    r = requests.post(url + path, json=body, timeout=(10, rng.uniform(0.05, 0.5)))
                    ok = r.status_code in (200, 503)  # it was faster than the client's patience
                except requests.ReadTimeout:
                    r, ok = None, True
            else:
                r = requests.post(url + path, json=body, timeout=120)
                ok = r.status_code == 200
                if ok and stream and not terminated(dialect, r.text):
                    st.add(truncated=1)
            if r is not None and r.status_code == 503:
                st.add(busy=1)
                ok = bool(r.headers.get("Retry-After"))
                time.sleep(0.2)
        except requests.RequestException as e:
            ok, r = False, None
            with st.lock:
                st.examples.append(f"{path}: {e!r}"[:200])
        st.add(n=1, unexpected=0 if ok else 1)
        if not ok and r is not None:
            with st.lock:
                st.examples.append(f"{path} -> {r.status_code}: {r.text[:150]}")


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per 100 requests."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points) or 1.0
    return 100 * sum((x - mx) * (y - my) for x, y in points) / den


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running server (default: start lanner serve on SmolLM2)")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--clients", type=int, default=0, help="default: 2 x --parallel")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "lanner.cli", "serve", "--port", str(port),
                                 "--parallel", str(args.parallel), "--threads", str(args.threads),
                                 "--ctx-size", "2048"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "LANNER_MODEL": ""})
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
    model = requests.get(url + "/api/tags").json()["models"][0]["name"]
    st = Stats()
    t_end = time.time() + args.minutes * 60
    n_clients = args.clients or 2 * args.parallel
    threads = [threading.Thread(target=client, args=(url, model, t_end, i, st), daemon=True)
               for i in range(n_clients)]
    for t in threads:
        t.start()
    rss: list[tuple[int, float]] = []
    next_mark = 100
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if proc is not None and st.n >= next_mark:
            rss.append((st.n, worker_rss_mb(proc.pid)))
            next_mark += 100
    alive = requests.get(url + "/health", timeout=5).status_code == 200
    time.sleep(1)  # let the last disconnects be noticed
    m = re.search(r"^lanner_client_disconnects_total (\S+)$",
                  requests.get(url + "/metrics", timeout=5).text, re.M)
    aborted = int(float(m.group(1))) if m else -1
    if proc is not None:
        proc.terminate()
        proc.wait(30)
    print(f"{args.minutes:g} min, {n_clients} clients: requests {st.n}, unexpected {st.unexpected}, "
          f"truncated streams {st.truncated}, 503 (queue) {st.busy}, disconnects {st.disconnects}, "
          f"requests the server aborted for a gone client {aborted}, alive at the end {alive}")
    if rss:
        print(f"worker RSS {rss[0][1]:.0f} MB at request {rss[0][0]} -> {rss[-1][1]:.0f} MB at "
              f"{rss[-1][0]}; slope {slope(rss):+.2f} MB per 100 requests")
    for e in st.examples[:10]:
        print("  ", e)
    return 0 if st.unexpected == 0 and st.truncated == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
