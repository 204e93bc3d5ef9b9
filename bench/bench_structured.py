"""Grammar-constrained decoding cost on SmolLM2 and Gemma 3, with llama-cpp-python as the peer.

For each model, one sequence, greedy, N generated tokens (EOS ignored when free; the schema is
an array long enough that the grammar never ends it first): decode tokens/s with and without a
JSON schema, alternating runs, medians; the ratio constrained/free is the number that matters.
lanner also reports mask time per token (p50/p99), the time the model thread waited for masks
per token, and the same constrained run with the overlap off (each mask computed in the model
thread when its logits arrive, instead of on the worker while the step decodes). Peer: llama_cpp.Llama with LlamaGrammar
.from_json_schema (GBNF), in a subprocess of the given python (its libllama cannot load next to
lanner's libggml; a stub stands in for its optional diskcache import).
Run (the installed lanner): python bench/bench_structured.py [--runs 3] [--tokens 64] [--peer-python PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCHEMA = {"type": "array", "minItems": 200, "maxItems": 200, "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                     "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"], "additionalProperties": False}}
PROMPT = "List people with their names and ages as a JSON array."


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else 0.0


def bench_lanner(path: str, threads: int, runs: int, n_tok: int) -> dict:
    from lanner import LLM
    from lanner.types import FinishEvent, GenerateRequest, Grammar, SamplingParams

    with LLM(path, n_ctx=2048, n_threads=threads, n_parallel=1) as llm:
        t0 = time.perf_counter()
        llm.warm_grammar()
        warm_s = time.perf_counter() - t0
        prompt = llm.chat_tokens([{"role": "user", "content": PROMPT}])
        grammar = Grammar.json_schema(SCHEMA)
        rates = {"free": [], "schema": [], "schema_no_overlap": []}
        waits = {"schema": 0, "schema_no_overlap": 0}
        compile_ms = []
        g = llm.engine.grammar
        g.mask_ns.clear()
        n_constrained = 0
        for r in range(runs + 1):  # the first round warms up and is dropped
            for kind in ("free", "schema", "schema_no_overlap"):
                g.overlap = kind != "schema_no_overlap"
                w0 = g.wait_ns
                t = time.perf_counter()
                req = GenerateRequest(prompt_tokens=prompt, max_tokens=n_tok, sampling=SamplingParams(),
                                      ignore_eos=kind == "free", grammar=None if kind == "free" else grammar)
                stream = llm.engine.submit(req)
                if kind == "schema":
                    compile_ms.append((time.perf_counter() - t) * 1e3)
                fin = [ev for ev in stream if isinstance(ev, FinishEvent)][0]
                n = fin.usage.completion_tokens
                assert n == n_tok, (kind, n, fin.reason)
                if r > 0:
                    rates[kind].append((n - 1) / (fin.timings.eval_ns / 1e9))
                    n_constrained += n if kind == "schema" else 0
                    if kind != "free":
                        waits[kind] += g.wait_ns - w0
        mask_us = [x / 1e3 for x in g.mask_ns]
        return {"free_tok_s": statistics.median(rates["free"]),
                "schema_tok_s": statistics.median(rates["schema"]),
                "schema_no_overlap_tok_s": statistics.median(rates["schema_no_overlap"]),
                "mask_us_p50": percentile(mask_us, 0.5), "mask_us_p99": percentile(mask_us, 0.99),
                "wait_us_per_token": waits["schema"] / 1e3 / max(1, n_constrained),
                "wait_us_per_token_no_overlap": waits["schema_no_overlap"] / 1e3 / max(1, n_constrained),
                "compile_ms_p50": statistics.median(compile_ms), "vocab_build_s": warm_s,
                "prompt": prompt}


PEER = r"""
import json, statistics, sys, time, types
sys.modules.setdefault("diskcache", types.SimpleNamespace(Cache=object))
from llama_cpp import Llama, LlamaGrammar
path, threads, runs, n_tok, schema, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], json.loads(sys.argv[6])
llm = Llama(model_path=path, n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)
t0 = time.perf_counter(); grammar = LlamaGrammar.from_json_schema(schema, verbose=False); build = time.perf_counter() - t0
eos = llm.token_eos()
rates = {"free": [], "schema": []}
for r in range(runs + 1):
    for kind in ("free", "schema"):
        llm.reset()
        t = time.perf_counter()
        kw = {"grammar": grammar} if kind == "schema" else {"logit_bias": {eos: -1e9}}
        first = None; n = 0
        for chunk in llm.create_completion(prompt, max_tokens=n_tok, temperature=0.0, stream=True, **kw):
            n += 1
            if first is None: first = time.perf_counter()
        if r > 0 and n > 1:
            rates[kind].append((n - 1) / (time.perf_counter() - first))
print(json.dumps({"free_tok_s": statistics.median(rates["free"]), "schema_tok_s": statistics.median(rates["schema"]), "grammar_build_s": build}))
"""


def bench_peer(python: str, path: str, threads: int, runs: int, n_tok: int, prompt: list[int]) -> dict:
    """The same prompt ids (lanner's chat template) on llama_cpp."""
    try:
        out = subprocess.run([python, "-c", PEER, path, str(threads), str(runs), str(n_tok),
                              json.dumps(SCHEMA), json.dumps(prompt)], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": repr(e)}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from lanner.default_model import gemma3_path, smollm2_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--peer-python", default="/work/venv-families-a/bin/python")
    a = ap.parse_args()
    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    for name in a.models.split(","):
        path = str(paths[name]())
        res = {"model": name, "lanner": bench_lanner(path, a.threads, a.runs, a.tokens)}
        prompt = res["lanner"].pop("prompt")
        if Path(a.peer_python).exists():
            res["llama_cpp"] = bench_peer(a.peer_python, path, a.threads, a.runs, a.tokens, prompt)
        for side in ("lanner", "llama_cpp"):
            r = res.get(side)
            if r and "free_tok_s" in r:
                r["ratio"] = r["schema_tok_s"] / r["free_tok_s"]
        print(json.dumps(res, indent=1), flush=True)


if __name__ == "__main__":
    main()
