"""Mutation fuzzer for the GGUF loader: damaged files must give a clean ModelLoadError, never a
crash, a hang or memory blow-up.

Seeds: tiny models written by tests/tiny_gguf.py (llama F32 and Q8_0, and each family file
that tests/tiny_gguf.py can write). Each input is a seed with a few mutations (bit flips,
interesting integers over 1-8 bytes, truncation, a chunk deleted or duplicated), loaded by
lanner._core.Model, and when that succeeds decoded once, in a child process that reads
inputs from a pipe, so a crash (a signal) or a hang (no answer in --timeout s) is recorded
with its input under --out and the child restarted.

Run: python bench/fuzz_gguf.py --seconds 300 [--out bench/results/fuzz_gguf]
Prints: inputs tried, clean load errors, loads that worked, crashes, hangs (the last two must be 0).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import os, sys
import numpy as np
from lanner import _core
out = sys.stdout
for line in sys.stdin:
    path = line.strip()
    try:
        m = _core.Model(path)
        ctx = _core.Context(m, n_ctx=64, n_batch=16, n_seq_max=2, n_threads=1)
        n = min(4, m.n_vocab)
        ctx.decode(np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32),
                   np.zeros(n, np.int32), np.ones(n, np.bool_))
        out.write("ok\n")
    except (ValueError, RuntimeError) as e:
        out.write("error " + type(e).__name__ + "\n")
    out.flush()
"""

INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
               0xFFFFFFFFFFFFFFFF, 2 ** 40, 2 ** 62]


def seeds(tmp: Path) -> list[bytes]:
    import tiny_gguf

    files = [tiny_gguf.write_tiny_llama(tmp / "llama_f32.gguf"),
             tiny_gguf.write_tiny_llama(tmp / "llama_q8.gguf", weight_type="Q8_0")]
    for fam in getattr(tiny_gguf, "FAMILIES", ()):
        try:
            files.append(tiny_gguf.write_tiny_family(tmp / f"{fam}.gguf", fam))
        except Exception as e:  # a family the writer cannot make here: fuzz the others
            print(f"seed {fam}: skipped ({type(e).__name__}: {e})")
    return [Path(f).read_bytes() for f in files]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        # the header, metadata and tensor infos come first: bias mutations toward them
        i = int(min(len(b) - 1, abs(rng.gauss(0, 4096)))) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and len(b) > i + 8:
            width = rng.choice((1, 2, 4, 8))
            v = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            b[i:i + width] = v.to_bytes(width, "little")
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3 and b:
            j = rng.randrange(len(b))
            del b[j:j + rng.randint(1, 64)]
        elif b:
            j = rng.randrange(len(b))
            b[j:j] = b[j:j + rng.randint(1, 64)]
    return bytes(b)


class Child:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, path: str, timeout: float) -> str:
        """'ok' | 'error ...' | 'crash <signal>' | 'hang'."""
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            return "hang"
        line = self.proc.stdout.readline().strip()
        if not line:
            code = self.proc.wait()
            return f"crash {code}"
        return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--timeout", type=float, default=20, help="seconds one input may take")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fuzz_gguf"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz_gguf_"))
    corpus = seeds(tmp)
    counts = {"tried": 0, "error": 0, "ok": 0, "crash": 0, "hang": 0}
    child = Child()
    t_end = time.time() + args.seconds
    path = tmp / "input.gguf"
    while time.time() < t_end:
        data = mutate(rng.choice(corpus), rng)
        path.write_bytes(data)
        result = child.run(str(path), args.timeout)
        counts["tried"] += 1
        kind = result.split()[0]
        counts[kind] += 1
        if kind in ("crash", "hang"):
            out.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(data).hexdigest()[:16]
            (out / f"{kind}-{name}.gguf").write_bytes(data)
            print(f"{result}: saved {out / f'{kind}-{name}.gguf'}", flush=True)
            child = Child()
    child.proc.stdin.close()
    child.proc.wait()
    print(f"seeds {len(corpus)}, seconds {args.seconds:.0f}: inputs {counts['tried']}, "
          f"clean errors {counts['error']}, loaded+decoded {counts['ok']}, "
          f"crashes {counts['crash']}, hangs {counts['hang']}")
    return 1 if counts["crash"] or counts["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
