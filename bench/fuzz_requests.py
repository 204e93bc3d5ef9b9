"""Mutation fuzzer for the HTTP request side: every route, bodies mutated at the JSON level
(values swapped for other types, NaN/inf, huge numbers, deep nesting, keys dropped or added)
and at the byte level. A request may be refused (4xx) but never answered 5xx, never hang.

It runs in one process on a Falcon test client over the fake backend (tests/fake_backend.py),
so it exercises parsing, validation, templating calls and rendering, not the model.
Run: python bench/fuzz_requests.py --seconds 120
Prints per route: requests, statuses seen; and every 5xx with its body (must be none).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "python")]

from fake_backend import FakeLLM  # noqa: E402
from server_helpers import make_client  # noqa: E402

MODEL = "fake-model.Q4_0"
U = [{"role": "user", "content": "hi"}]
ROUTES = [
    ("/v1/chat/completions", {"messages": U, "max_tokens": 8, "temperature": 0.5, "stop": ["x"],
                              "logprobs": True, "top_logprobs": 2, "stream": False,
                              "response_format": {"type": "json_object"},
                              "tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 8, "logprobs": 1, "echo": True, "seed": 3}),
    ("/api/chat", {"messages": U, "stream": False, "options": {"num_predict": 8, "top_k": 3},
                   "format": "json", "think": True}),
    ("/api/generate", {"prompt": "hi", "system": "s", "stream": False, "raw": False,
                       "options": {"temperature": 0.1, "stop": ["a"]}}),
    (f"/v1beta/models/{MODEL}:generateContent",
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
      "systemInstruction": {"parts": [{"text": "s"}]},
      "generationConfig": {"maxOutputTokens": 8, "topK": 2, "stopSequences": ["z"],
                           "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"}}}),
    (f"/v1beta/models/{MODEL}:countTokens", {"contents": "hi"}),
    ("/api/show", {"model": MODEL}),
]
VALUES = [None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 63), 1e308, -1e-308, float("nan"),
          float("inf"), "", "x", "<|im_end|>", "\u0000", "\ud7ff" * 3, [], [1], {}, {"a": 1},
          [[[[]]]], "a" * 5000, [U[0]] * 50]


def paths(obj, prefix=()):
    yield prefix
    if len(prefix) >= 6:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def set_at(obj, path, value):
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def mutate(body: dict, rng: random.Random):
    b = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        targets = list(paths(b))
        p = rng.choice(targets)
        op = rng.randrange(5)
        if op == 0 and p:
            b = set_at(b, p, copy.deepcopy(rng.choice(VALUES)))
        elif op == 1 and p:  # drop a key / an item
            parent = b
            for k in p[:-1]:
                parent = parent[k]
            del parent[p[-1]]
        elif op == 2 and isinstance(b, dict):
            b[rng.choice(["extra", "model", "stream", "n", "seed", "tool_choice", "keep_alive"])] = \
                copy.deepcopy(rng.choice(VALUES))
        elif op == 3 and p:  # nest deeper: spliced into the text below (json.dumps would recurse)
            b = set_at(b, p, f"__DEEP_{rng.choice((2, 50, 500, 5000, 100_000))}__")
        else:
            break
    text = json.dumps(b, allow_nan=True)
    while "\"__DEEP_" in text:
        i = text.index("\"__DEEP_")
        j = text.index("__\"", i + 8)
        n = int(text[i + 8:j])
        text = text[:i] + "[" * n + "1" + "]" * n + text[j + 3:]
    if rng.random() < 0.2:  # byte-level damage of the serialised body
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 5)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    return text.encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    client = make_client(FakeLLM())
    seen: dict[str, collections.Counter] = {p: collections.Counter() for p, _ in ROUTES}
    failures = []
    slowest = 0.0
    t_end = time.time() + args.seconds
    while time.time() < t_end:
        path, body = rng.choice(ROUTES)
        data = mutate(body, rng)
        t0 = time.perf_counter()
        r = client.simulate_post(path, body=data, headers={"Content-Type": "application/json"})
        slowest = max(slowest, time.perf_counter() - t0)
        seen[path][r.status_code] += 1
        if r.status_code >= 500 and r.status_code != 503:
            failures.append((path, data[:300], r.status_code, r.text[:300]))
            print(f"{r.status_code} {path}: {data[:200]!r} -> {r.text[:200]}", flush=True)
    total = sum(sum(c.values()) for c in seen.values())
    for path, c in seen.items():
        print(f"{path:45s} {sum(c.values()):6d} requests  statuses {dict(sorted(c.items()))}")
    print(f"requests {total}, 5xx {len(failures)}, slowest {slowest * 1000:.0f} ms")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
