"""Sampler cost per token for 49k (SmolLM2) and 262k (Gemma 3) vocabularies.

Prints µs/token for greedy and for the full default pipeline (bias, penalties over 64 tokens,
top_k 40, top_p 0.95, min_p 0.05, temperature 0.8), plus the ratio against a straightforward
numpy peer measured in the same run (full softmax + full sort). Logits: real rows from
llama-cpp-python when installed (SmolLM2 / Gemma 3 on a short prompt), else synthetic
(Gaussian, sd 3, a few peaks). Not a test: timings never gate anything.
Run: PYTHONPATH=python python bench/bench_sampling.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from lanner.engine.sampling import Sampler  # noqa: E402
from lanner.types import SamplingParams  # noqa: E402

PROMPT = "The capital of France is Paris. The capital of Italy is"


def synthetic_rows(n_vocab: int, n_rows: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n_rows):
        l = (rng.standard_normal(n_vocab) * 3).astype(np.float32)
        l[rng.integers(0, n_vocab, 5)] += rng.uniform(5, 15)
        rows.append(l)
    return rows


def real_rows(path: Path) -> list[np.ndarray] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False)
    toks = llm.tokenize(PROMPT.encode())
    llm.eval(toks)
    scores = np.array(llm.scores[: len(toks)], dtype=np.float32)  # (n_tokens, n_vocab)
    return [scores[i] for i in range(len(toks))]


def peer_sample(l: np.ndarray, prev: list[int], p: SamplingParams, rng) -> int:
    """Reference pipeline on the whole vocabulary: copy, penalties, full sort, softmax."""
    l = l.astype(np.float64)
    ids, counts = np.unique(np.asarray(prev[-p.repeat_last_n:]), return_counts=True)
    x = l[ids]
    l[ids] = np.where(x <= 0, x * p.repeat_penalty, x / p.repeat_penalty) - counts * p.frequency_penalty - p.presence_penalty
    order = np.argsort(-l)[: p.top_k]
    lk = l[order]
    pk = np.exp(lk - lk[0])
    pk /= pk.sum()
    keep = int(np.searchsorted(np.cumsum(pk), p.top_p)) + 1
    keep = min(keep, int((pk >= p.min_p * pk[0]).sum()))
    w = np.exp((lk[:keep] - lk[0]) / p.temperature)
    return int(order[np.searchsorted(np.cumsum(w), rng.random() * w.sum())])


def per_token_us(fn, rows: list[np.ndarray], repeat: int = 5, min_calls: int = 200) -> float:
    best = float("inf")
    n = max(1, min_calls // len(rows))
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            for r in rows:
                fn(r)
        best = min(best, (time.perf_counter() - t0) / (n * len(rows)))
    return best * 1e6


def main() -> None:
    from lanner.default_model import gemma3_path, smollm2_path

    prev = list(np.random.default_rng(1).integers(0, 40000, 300))
    for name, n_vocab, locate in [("SmolLM2", 49152, smollm2_path), ("Gemma 3", 262144, gemma3_path)]:
        rows, src = None, "synthetic"
        try:
            rows = real_rows(locate())
            src = "real (llama.cpp)" if rows is not None else src
        except FileNotFoundError:
            pass
        rows = rows or synthetic_rows(n_vocab)
        greedy = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))
        greedy_pen = Sampler(SamplingParams(temperature=0.0))
        params = SamplingParams(seed=0, presence_penalty=0.2, frequency_penalty=0.1)
        full = Sampler(params)
        no_filters = Sampler(SamplingParams(seed=0, top_k=0, top_p=1.0, min_p=0.0))
        top_p_only = Sampler(SamplingParams(seed=0, top_k=0, top_p=0.9, min_p=0.0))
        rng = np.random.default_rng(0)
        t_greedy = per_token_us(lambda r: greedy.sample(r, prev), rows)
        t_greedy_pen = per_token_us(lambda r: greedy_pen.sample(r, prev), rows)
        t_full = per_token_us(lambda r: full.sample(r, prev), rows)
        t_peer = per_token_us(lambda r: peer_sample(r, prev, params, rng), rows, repeat=3, min_calls=20)
        t_nofilter = per_token_us(lambda r: no_filters.sample(r, prev), rows, repeat=3, min_calls=40)
        t_top_p = per_token_us(lambda r: top_p_only.sample(r, prev), rows, repeat=3, min_calls=40)
        print(f"{name} (n_vocab {rows[0].shape[0]}, {src} logits, {len(rows)} rows)")
        print(f"  greedy                       {t_greedy:8.1f} µs/token")
        print(f"  greedy + repeat penalty      {t_greedy_pen:8.1f} µs/token")
        print(f"  full default pipeline        {t_full:8.1f} µs/token   "
              f"(numpy full-sort peer {t_peer:8.1f} µs, lanner/peer = {t_full / t_peer:.3f}x)")
        print(f"  top_p 0.9 only (no top_k)    {t_top_p:8.1f} µs/token")
        print(f"  no filters (whole vocab)     {t_nofilter:8.1f} µs/token")


if __name__ == "__main__":
    main()
