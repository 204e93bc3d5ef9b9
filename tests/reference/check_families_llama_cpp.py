"""Compare lanner's core with llama.cpp (llama-cpp-python) on a tiny model of every family.
Not a pytest test: llama.cpp is an optional bench dependency, and it cannot share a process with
lanner._core (both load a libggml-base.so.0), so llama.cpp runs in a subprocess (--peer mode).

Families: llama3, mistral, gemma2, phi3 (tests/tiny_gguf.py FAMILIES, trained tiny vocabularies)
and qwen2, qwen3, qwen3moe, gpt-oss (FAMILY_ARCHS, byte-level BPE vocabularies with the family's
pre-tokenizer). Per family: 8 text prompts tokenized by both (ids must be identical);
per-position logits cosine over each prompt (>= 0.9999 required); greedy 32-token continuations
(identical required; a continuation that parts at a near-tie, top1 - top2 < 1e-3 on both sides,
is reported as such, and fails); the tokenizer corpus with and without special-token parsing
(identical required for the byte-level BPE pre-tokenizers, except Qwen2 strings that Unicode NFC
changes: llama.cpp leaves out the normalizer that transformers and lanner apply; the
SentencePiece ones are reported). Both sides: F16 KV cache, flash attention, CPU, 2 threads.

    python tests/reference/check_families_llama_cpp.py [--peer-python PY] [--peer-lib DIR]
        [--weight-type F16|F32|Q8_0] [--expert-type MXFP4] [--only qwen3,gpt-oss]

--peer-lib: a folder with another build of the same llama.cpp's shared libraries (libllama.so
and its ggml), loaded by llama-cpp-python through LLAMA_CPP_LIB_PATH, e.g. one built without
llamafile's sgemm as lanner's ggml is (tests/reference/README.md).
Exits 1 on any failed requirement (with F16/F32 weights; quantized runs are reported). `mistral` is run twice: without its sliding window (must
match) and with it (llama.cpp ignores `llama.attention.sliding_window`, so positions past the
window are expected to differ; reported, not required).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # tests/

PROMPTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a land far, far away, there lived a tokenizer.",
    "def add(a, b):\n    return a + b\n",
    "I'm sure you've heard: they'll say it's fine, but we'd rather not.",
    "Numbers: 1, 22, 333, 4444 and 3.14159",
    "A sentence with trailing spaces   ",
    "the the the the",
]
N_NEW = 32
N_CTX_PEER = 1024  # llama.cpp context (per sequence): > phi3's original 64, so long factors
N_CTX_OURS = 256   # likewise > 64


# ---- peer side (llama-cpp-python; never imports lanner._core) -----------------------------------

def peer_main(jobs_path: str, out_path: str) -> None:
    from llama_cpp import Llama

    jobs = json.loads(Path(jobs_path).read_text())
    out: dict = {"version": __import__("llama_cpp").__version__, "jobs": []}
    arrays = {}
    for j, job in enumerate(jobs):
        res = {"tokens": [], "greedy": [], "margins": []}
        voc = Llama(model_path=job["path"], vocab_only=True, verbose=False)
        res["tokens"] = [voc.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in PROMPTS]
        if job.get("corpus"):
            from data.tokenizer_corpus import CORPUS

            res["corpus"] = [[voc.tokenize(t.encode("utf-8"), add_bos=False, special=sp) for sp in (False, True)]
                             for t in CORPUS]
        voc.close()
        llm = Llama(model_path=job["path"], logits_all=True, n_ctx=N_CTX_PEER, n_batch=512, n_ubatch=512,
                    n_threads=2, n_gpu_layers=0, flash_attn=True, verbose=False)
        for p, ids in enumerate(job["prompts"]):
            llm.reset()
            llm.eval(ids)
            arrays[f"j{j}p{p}"] = np.array(llm.scores[: len(ids)], dtype=np.float32)
            gen, margin = [], []
            for _ in range(N_NEW):
                row = llm.scores[llm.n_tokens - 1]
                t = int(np.argmax(row))
                top2 = np.sort(row)[-2:]
                gen.append(t)
                margin.append(float(top2[1] - top2[0]))
                llm.eval([t])
            res["greedy"].append(gen)
            res["margins"].append(margin)
        llm.close()
        out["jobs"].append(res)
    np.savez(out_path + ".npz", **arrays)
    Path(out_path + ".json").write_text(json.dumps(out))


# ---- our side ----------------------------------------------------------------------------------

def ours_run(path: str, prompts: list[list[int]]):
    """(prompt logits per prompt, greedy ids per prompt, top1 - top2 logit margin per greedy step)."""
    import lanner._core as core

    model = core.Model(path)
    logits, greedy, margins = [], [], []
    for ids in prompts:
        c = core.Context(model, n_ctx=N_CTX_OURS, n_batch=256, n_seq_max=1, n_threads=2)
        n = len(ids)
        lg = c.decode(np.array(ids, np.int32), np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                      np.ones(n, np.uint8)).copy()
        logits.append(lg)
        gen, row, margin = [], lg[-1], []
        for i in range(N_NEW):
            t = int(np.argmax(row))
            gen.append(t)
            top2 = np.sort(row)[-2:]
            margin.append(float(top2[1] - top2[0]))
            row = c.decode(np.array([t], np.int32), np.array([n + i], np.int32), np.zeros(1, np.int32),
                           np.ones(1, np.uint8))[0].copy()
        greedy.append(gen)
        margins.append(margin)
    return logits, greedy, margins


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def make_runs(args, tmp: Path) -> list[dict]:
    """Write each family's tiny model: [{label, path, corpus rule, required}]."""
    from tiny_gguf import FAMILY_ARCHS, family_pre, write_tiny_arch, write_tiny_family

    runs = []
    tiny = [("llama3", {}, "llama-bpe"), ("mistral", {"attention.sliding_window": None}, "spm"),
            ("mistral", {}, None), ("gemma2", {}, "spm"), ("phi3", {}, "spm")]
    for family, kv, corpus in tiny:
        label = family + (" (window 6)" if family == "mistral" and not kv else
                          " (no window)" if family == "mistral" else "")
        path = write_tiny_family(tmp / f"{family}-{len(runs)}.gguf", family,
                                 weight_type=args.weight_type, **kv)
        runs.append({"label": label, "path": path, "corpus": corpus, "required": "window 6" not in label})
    for arch in FAMILY_ARCHS:
        etype = args.expert_type if arch in ("qwen3moe", "gpt-oss") else None
        path = write_tiny_arch(tmp / f"{arch}.gguf", arch, weight_type=args.weight_type, expert_type=etype)
        runs.append({"label": arch + (f" ({etype} experts)" if etype else ""), "path": path,
                     "corpus": family_pre(arch), "required": True})
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r["label"].split(" ")[0] in keep]
    return runs


def corpus_result(tok, pre: str, peer_corpus) -> tuple[str, bool]:
    """('plain/n / special/n', ok): identical required for byte-level BPE (Qwen2: modulo NFC)."""
    from data.tokenizer_corpus import CORPUS

    plain = special = 0
    unexplained = 0
    for t, c in zip(CORPUS, peer_corpus):
        for sp, theirs in ((False, c[0]), (True, c[1])):
            same = tok.encode(t, add_special=False, parse_special=sp) == theirs
            plain += same and not sp
            special += same and sp
            if not same and not (pre == "qwen2" and unicodedata.normalize("NFC", t) != t):
                unexplained += 1
    text = f"{plain}/{len(CORPUS)} / {special}/{len(CORPUS)}"
    if pre == "qwen2" and plain + special < 2 * len(CORPUS):
        text += " (rest: NFC)" if not unexplained else ""
    return text, pre == "spm" or unexplained == 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", nargs=2, metavar=("JOBS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--peer-python", default=sys.executable,
                    help="a Python with llama-cpp-python installed (default: this one)")
    ap.add_argument("--peer-lib", help="LLAMA_CPP_LIB_PATH for the peer: another build's libllama.so")
    ap.add_argument("--weight-type", default="F16", help="type of the 2-D weights (F16, F32, Q8_0)")
    ap.add_argument("--expert-type", help="type of the MoE expert matrices (default: --weight-type)")
    ap.add_argument("--only", help="comma-separated families to run (default: all)")
    args = ap.parse_args()
    if args.peer:
        peer_main(*args.peer)
        return 0

    from gguf_metadata import read_metadata
    from lanner.text.tokenizer import Tokenizer
    from reference.numpy_forward import ReferenceModel

    tmp = Path(tempfile.mkdtemp(prefix="lanner-families-"))
    runs = make_runs(args, tmp)
    jobs, local = [], []
    for r in runs:
        tok = Tokenizer.from_metadata(read_metadata(r["path"]))
        prompts = [tok.encode(t) for t in PROMPTS]
        jobs.append({"path": r["path"], "prompts": prompts, "corpus": r["corpus"] is not None})
        local.append((r, tok, prompts))
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    out = str(tmp / "peer")
    env = dict(os.environ)
    if args.peer_lib:
        env["LLAMA_CPP_LIB_PATH"] = args.peer_lib
    subprocess.run([args.peer_python, __file__, "--peer", str(tmp / "jobs.json"), out], check=True,
                   cwd=str(_HERE.parent), env=env)
    peer = json.loads(Path(out + ".json").read_text())
    peer_logits = np.load(out + ".npz")
    print(f"llama-cpp-python {peer['version']}{' with ' + args.peer_lib if args.peer_lib else ''}; "
          f"lanner core; {args.weight_type} weights, F16 KV, flash attention\n")
    print("| family | prompt ids equal | min cos (positions) | argmax agree | greedy 32 identical "
          "| numpy ref vs llama.cpp min cos | corpus ids equal (plain / special) |")
    print("|---|---|---|---|---|---|---|")
    ok, notes = True, []
    strict = args.weight_type in ("F16", "F32")  # quantized rows are reported, not required
    for j, (r, tok, prompts) in enumerate(local):
        label, res = r["label"], peer["jobs"][j]
        ids_equal = sum(a == b for a, b in zip(prompts, res["tokens"]))
        ours_logits, ours_greedy, ours_margins = ours_run(r["path"], prompts)
        ref = ReferenceModel(r["path"], n_ctx=N_CTX_PEER)
        cos_min, ref_cos_min, n_pos, agree = 1.0, 1.0, 0, 0
        for p, ids in enumerate(prompts):
            theirs = peer_logits[f"j{j}p{p}"]
            cos_min = min(cos_min, float(cosines(ours_logits[p], theirs).min()))
            ref_cos_min = min(ref_cos_min, float(cosines(ref.forward(ids), theirs).min()))
            agree += int((ours_logits[p].argmax(-1) == theirs.argmax(-1)).sum())
            n_pos += len(ids)
        same = sum(a == b for a, b in zip(ours_greedy, res["greedy"]))
        ties = 0  # divergences at a near-tie: top1 - top2 < 1e-3 on both sides at that step
        for p, (a, b) in enumerate(zip(ours_greedy, res["greedy"])):
            if a != b:
                k = next(i for i in range(N_NEW) if a[i] != b[i])
                m_ours, m_peer = ours_margins[p][k], res["margins"][p][k]
                ties += m_ours < 1e-3 and m_peer < 1e-3
                notes.append(f"{label} prompt {p}: greedy differs from step {k} ({a[k]} vs {b[k]}); "
                             f"top1-top2 margin there: ours {m_ours:.2e}, llama.cpp {m_peer:.2e}")
        corpus, corpus_ok = "-", True
        if "corpus" in res:
            corpus, corpus_ok = corpus_result(tok, r["corpus"], res["corpus"])
        print(f"| {label} | {ids_equal}/{len(PROMPTS)} | {cos_min:.6f} ({n_pos}) | {agree}/{n_pos} | "
              f"{same}/{len(PROMPTS)}{f' (+{ties} near-tie)' if ties else ''} | {ref_cos_min:.6f} | {corpus} |",
              flush=True)
        if r["required"] and strict and (cos_min < 0.9999 or same != len(PROMPTS) or ids_equal != len(PROMPTS)
                              or not corpus_ok):
            ok = False
    for n in notes:
        print("-", n)
    if not strict:
        print(f"\n(requirements apply to F16/F32 weights; {args.weight_type} rows are reported)")
    print("\nPASS" if ok else "\nFAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
