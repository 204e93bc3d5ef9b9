"""Tokenizer encode/decode speed on 100 kB of text, for SmolLM2 (byte-level BPE) and Gemma 3 (SPM).

Prints ms per 100 kB (UTF-8 bytes) for lanner's Tokenizer and, when llama-cpp-python is
installed, the ratio against llama.cpp's tokenizer measured in the same run. Target: encode
< 100 ms per 100 kB. Not a test: timings never gate anything.
Run: PYTHONPATH=python python bench/bench_tokenizer.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests")]

from data.tokenizer_corpus import CORPUS  # noqa: E402
from gguf_metadata import read_metadata  # noqa: E402
from lanner.default_model import gemma3_path, smollm2_path  # noqa: E402
from lanner.text.tokenizer import Tokenizer  # noqa: E402

N_BYTES = 100_000

PROSE = (
    "The scheduler keeps one model thread busy. Requests arrive over HTTP, are templated and "
    "tokenized on the server threads, and wait in a queue until a slot frees up. Each step the "
    "engine decodes one token for every running sequence, samples it, and streams the text delta "
    "back to the client; finished sequences donate their cells to the prefix cache.\n"
    "def step(batch):\n    logits = core.decode(batch)  # (n_seq, n_vocab)\n    return [s.sample(l) for s, l in zip(batch, logits)]\n"
)


def make_text(parts: list[str]) -> str:
    """Concatenate `parts` cyclically to exactly N_BYTES UTF-8 bytes (cut at a char boundary)."""
    out, size, i = [], 0, 0
    while size < N_BYTES:
        p = parts[i % len(parts)]
        out.append(p)
        size += len(p.encode("utf-8"))
        i += 1
    return "".join(out).encode("utf-8")[:N_BYTES].decode("utf-8", errors="ignore")


def best_ms(fn, repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    texts = {"prose+code": make_text([PROSE]), "multilingual corpus": make_text([s + "\n" for s in CORPUS])}
    for name, path in [("SmolLM2 (gpt2/smollm)", smollm2_path()), ("Gemma 3 (llama/SPM)", gemma3_path())]:
        meta = read_metadata(path)
        t0 = time.perf_counter()
        tok = Tokenizer.from_metadata(meta)
        build_ms = (time.perf_counter() - t0) * 1e3
        print(f"{name}: vocab {tok.n_vocab}, build {build_ms:.0f} ms")
        try:
            import llama_cpp

            peer = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        except ImportError:
            peer = None
        for tname, text in texts.items():
            ids = tok.encode(text)
            enc = best_ms(lambda: tok.encode(text))
            dec = best_ms(lambda: tok.decode(ids))
            line = f"  {tname:20s} {len(ids):6d} tokens  encode {enc:6.1f} ms/100kB  decode {dec:5.1f} ms"
            if peer is not None:
                raw = text.encode("utf-8")
                penc = best_ms(lambda: peer.tokenize(raw, add_bos=tok.add_bos, special=False))
                line += f"  | llama.cpp encode {penc:6.1f} ms (lanner/llama.cpp = {enc / penc:.2f}x)"
            print(line)


if __name__ == "__main__":
    main()
