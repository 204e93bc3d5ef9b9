"""Validate the numpy reference (numpy_forward.py) against llama-cpp-python. Not a pytest test.

Owns: the evidence that the reference is right: per model and prompt, cosine similarity of the
logits and argmax agreement at every position; ablations that flip one convention at a time
(RoPE pair layout, norm offset, window size, ...) to show the chosen one is the one that matches;
a check of our GGUF parser against gguf.GGUFReader; the golden greedy ids test_reference_forward.py
pins. llama-cpp-python is an optional bench dependency, so this is a script:

    PYTHONPATH=python python tests/reference/check_against_llama_cpp.py [--quick]

(The tiny models of every family: check_families_llama_cpp.py.)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # tests/ -> `reference` package
sys.path.append(str(_HERE.parent.parent / "python"))  # lanner.default_model, if not installed

from lanner.default_model import gemma3_path, smollm2_path  # noqa: E402
from reference.numpy_forward import ReferenceModel, _read_gguf  # noqa: E402
from reference.numpy_forward import attend as _attend_grouped  # noqa: E402  (unpatched)

PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old",
]

# Natural prose long enough (> 512 tokens in both tokenizers) to exercise Gemma's sliding window.
LONG_TEXT = (
    "Lighthouses have guided sailors along dangerous coasts for more than two thousand years. "
    "The most famous early example, the Pharos of Alexandria, was built in the third century "
    "before the common era on a small island at the entrance of the harbour. Ancient writers "
    "described a tower of three stages, square at the bottom, octagonal in the middle and round "
    "at the top, where a fire burned through the night and a polished mirror may have reflected "
    "sunlight during the day. Earthquakes damaged it repeatedly, and by the fifteenth century its "
    "stones had been reused to build a fortress on the same site.\n\n"
    "For centuries afterwards most coastal lights were simple wood or coal fires kept burning on "
    "hills, church towers or purpose-built platforms. They were smoky, dim and expensive, and in "
    "bad weather they could hardly be seen at all. Candles and oil lamps followed, but the real "
    "change came at the end of the eighteenth century with the Argand lamp, whose hollow circular "
    "wick drew air through the flame and burned far brighter and cleaner than anything before it. "
    "Engineers placed these lamps in front of parabolic reflectors made of silvered copper, and "
    "for the first time a light could be seen clearly from twenty miles out at sea.\n\n"
    "In 1822 the French physicist Augustin Fresnel presented a new kind of lens built from "
    "concentric rings of glass prisms. Instead of a single heavy lens, which would have been "
    "impossibly thick, his design bent the light from the lamp into a narrow horizontal beam "
    "using many thin sections. Fresnel lenses were graded into orders by their size, from the "
    "enormous first-order lenses used on major seacoast lights to the small sixth-order lenses "
    "found in harbours and on rivers. Rotating the lens assembly on a bed of mercury produced the "
    "characteristic flashes that allowed a navigator to tell one lighthouse from another.\n\n"
    "Keeping a lighthouse was demanding work. Keepers trimmed wicks, polished brass and glass, "
    "wound the clockwork that turned the lens, recorded the weather and kept watch through every "
    "night of the year. On remote rock stations they lived for weeks at a time in cramped rooms "
    "stacked inside the tower, cut off by storms and dependent on relief boats for food, fuel and "
    "news. Many stations also operated fog signals, from bells and cannons to steam whistles and "
    "compressed-air horns, because a light was useless when the sea was wrapped in mist.\n\n"
    "During the twentieth century electricity, automatic lamp changers and later solar panels "
    "made resident keepers unnecessary. One by one the stations were automated, and the last "
    "keepers left their towers. Satellite navigation now tells a ship its position to within a "
    "few metres, yet lighthouses have not disappeared. They remain a reliable backup when "
    "electronics fail, and many have become museums, guest houses or simply landmarks that "
    "people travel a long way to see. Their beams still sweep across the water every night, a "
    "reminder of the long history of people trying to keep one another safe at sea."
)


def _row_sums(fn, *arrays: np.ndarray, chunk: int = 32) -> np.ndarray:
    """fn(*float64 row chunks) -> per-row values, chunked so (600, 262144) inputs stay small."""
    n = arrays[0].shape[0]
    return np.concatenate([fn(*(x[i:i + chunk].astype(np.float64) for x in arrays))
                           for i in range(0, n, chunk)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per row of two (n_tokens, n_vocab) arrays, in float64."""
    return _row_sums(lambda x, y: (x * y).sum(-1) / (np.linalg.norm(x, axis=-1)
                                                      * np.linalg.norm(y, axis=-1)), a, b)


def compare(ref: np.ndarray, peer: np.ndarray) -> dict:
    cos = cosines(ref, peer)
    am_r, am_p = ref.argmax(-1), peer.argmax(-1)
    top2 = np.sort(peer, axis=-1)[:, -2:]
    bad = np.nonzero(am_r != am_p)[0]
    return {
        "n": len(cos), "min_cos": float(cos.min()), "mean_cos": float(cos.mean()),
        "agree": int((am_r == am_p).sum()),
        # peer's top-1 minus top-2 logit where argmax differs: near-ties explain a mismatch
        "mismatch_margins": [(int(i), round(float(top2[i, 1] - top2[i, 0]), 4)) for i in bad],
        "rms": float(np.sqrt(_row_sums(lambda x, y: ((x - y) ** 2).sum(-1), ref, peer).sum()
                             / ref.size)),
    }


class Peer:
    """llama-cpp-python run of the same file: full-prompt logits, one ubatch, CPU, F32 KV cache
    (the default F16 cache adds rounding the reference does not have: min cos 0.987 -> 0.993 on
    the long prompt). What remains is llama.cpp quantizing activations to 8 bits in its matmuls."""

    def __init__(self, path: str):
        from llama_cpp import Llama

        f32 = 0  # GGML_TYPE_F32
        self.llm = Llama(model_path=path, logits_all=True, n_ctx=1024, n_batch=1024,
                         n_ubatch=1024, n_threads=2, n_gpu_layers=0, type_k=f32, type_v=f32,
                         verbose=False)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True)  # BOS if the model wants it

    def logits(self, tokens: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)  # (n_tokens, n_vocab)


def greedy(fn, tokens: list[int], n_new: int) -> tuple[list[int], list[float], list[float]]:
    """n_new greedy tokens by re-running the full prompt; also each step's top1-top2 margin and
    top-1 logit (the values test_reference_forward.py pins)."""
    toks, margins, values = list(tokens), [], []
    for _ in range(n_new):
        row = fn(toks)[-1]
        top2 = np.sort(row)[-2:]
        margins.append(round(float(top2[1] - top2[0]), 2))
        values.append(round(float(top2[1]), 3))
        toks.append(int(row.argmax()))
    return toks[len(tokens):], margins, values


def check_parser(path: str) -> None:
    """Our GGUF parser must agree with gguf.GGUFReader on every tensor (name, ne, type, bytes)."""
    from gguf import GGUFReader

    t0 = time.time()
    r = GGUFReader(path)
    fields, tensors = _read_gguf(path)
    assert [t.name for t in r.tensors] == [t[0] for t in tensors]
    for t, (name, ne, qtype, raw) in zip(r.tensors, tensors):
        assert [int(d) for d in t.shape] == ne, name
        assert int(t.tensor_type) == qtype, name
        assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), raw.reshape(-1)), name
    for k, f in r.fields.items():
        if not k.startswith(("tokenizer.", "GGUF.")):
            assert f.contents() == fields[k], k
    print(f"  parser: {len(tensors)} tensors and all model keys identical to GGUFReader "
          f"({time.time() - t0:.1f}s)")


def norm_offset_evidence(model: ReferenceModel) -> None:
    """Gemma norm weights stored as (1 + w) with w in bf16: stored - 1 is bf16-exact, stored often
    is not. (If the file held raw w, stored itself would be bf16-exact.)"""
    def bf16_exact(a):
        return (a.astype(np.float32).view(np.uint32) & 0xFFFF) == 0

    norms = [k for k in model.weights if k.endswith("norm.weight")]
    vals = np.concatenate([model.weights[k].ravel() for k in norms])
    print(f"  norm weights ({len(norms)} tensors, {vals.size} values): "
          f"bf16-exact as stored {bf16_exact(vals).mean():.3f}, "
          f"bf16-exact after -1 {bf16_exact(vals - 1).mean():.3f}")


def ablate(model: ReferenceModel, **changes) -> ReferenceModel:
    """A copy of model with some hparams replaced (weights shared)."""
    alt = ReferenceModel.__new__(ReferenceModel)
    alt.__dict__.update(model.__dict__)
    alt.hparams = dataclasses.replace(model.hparams, **changes)
    return alt


def ablate_norm_plus_one(model: ReferenceModel) -> ReferenceModel:
    """A copy whose norm weights get another +1 (as if the file held raw Gemma weights)."""
    alt = ablate(model)
    alt.weights = {k: (v + 1 if k.endswith("norm.weight") else v) for k, v in model.weights.items()}
    return alt


def fmt(r: dict) -> str:
    mm = r["mismatch_margins"]
    if mm:
        worst = max(m for _, m in mm)
        shown = ", ".join(f"{i}:{m}" for i, m in mm[:6]) + (", ..." if len(mm) > 6 else "")
        mm = f" mismatch pos:peer-margin [{shown}] max margin {worst}"
    else:
        mm = ""
    return (f"n={r['n']:4d} min_cos={r['min_cos']:.5f} mean_cos={r['mean_cos']:.5f} "
            f"argmax {r['agree']}/{r['n']} rms={r['rms']:.4f}{mm}")


def lean(ref: np.ndarray, alt: np.ndarray, peer: np.ndarray) -> float:
    """Least-squares coefficient of (peer - ref) on (alt - ref): ~0 when the peer computes what
    ref does, ~1 when it computes what alt does. Noise uncorrelated with the alternative's effect
    (llama.cpp's 8-bit activations) averages out, so this resolves effects far below the rms."""
    num = _row_sums(lambda r, a, p: ((p - r) * (a - r)).sum(-1), ref, alt, peer).sum()
    den = _row_sums(lambda r, a: ((a - r) ** 2).sum(-1), ref, alt).sum()
    return float(num / den) if den > 0 else float("nan")


def run_model(name: str, path: str, golden_prompts: list[tuple[str, int]], quick: bool) -> None:
    print(f"\n=== {name}: {path}")
    if not quick:
        check_parser(path)
    t0 = time.time()
    model = ReferenceModel(path)
    print(f"  reference load {time.time() - t0:.1f}s; {model.hparams.arch}")
    peer = Peer(path)
    prompts = [peer.tokenize(p) for p in PROMPTS]
    long_ids = peer.tokenize(LONG_TEXT)
    cases = {f"prompt{i}": ids for i, ids in enumerate(prompts)}
    cases["long"] = long_ids
    ref_logits, peer_logits = {}, {}
    for label, ids in cases.items():
        t0 = time.time()
        ref_logits[label] = model.forward(ids)
        dt = time.time() - t0
        peer_logits[label] = peer.logits(ids)
        r = compare(ref_logits[label], peer_logits[label])
        print(f"  {label:8s} {fmt(r)}  (ref {dt:.1f}s)")

    # Ablations: (label, model with one convention flipped, case, first position compared).
    hp = model.hparams
    tail = hp.sliding_window - 1  # first query position a 512-window can hide a key from
    abl = []
    if hp.arch == "llama":
        abl += [
            ("rope NeoX (halves), not adjacent pairs", ablate(model, rope_neox=True), "prompt0", 0),
            ("GQA: q head h -> kv head h % n_kv", patched(model, "attend", attend_kv_interleaved),
             "prompt0", 0),
        ]
    else:
        norm_offset_evidence(model)
        abl += [
            ("rope adjacent pairs, not NeoX", ablate(model, rope_neox=False), "prompt0", 0),
            ("norm weights +1 again", ablate_norm_plus_one(model), "prompt0", 0),
            ("local rope base = global 1e6", ablate(model, rope_base_swa=hp.rope_base),
             "prompt0", 0),
            ("no embedding scale", ablate(model, embd_scale=1.0), "prompt0", 0),
            ("attn scale 1/sqrt(n_embd/n_head)",
             ablate(model, attn_scale=(hp.n_head / hp.n_embd) ** 0.5), "prompt0", 0),
            ("exact erf GELU, not tanh", patched(model, "gelu_tanh", gelu_erf), "prompt0", 0),
        ]
        if not quick:
            shifted = tuple(il % 6 != 0 for il in range(hp.n_layer))
            abl += [
                ("global rope base = 10000", ablate(model, rope_base=hp.rope_base_swa), "long", 0),
                ("global iff i % 6 == 0", ablate(model, layer_swa=shifted), "long", 0),
                ("no sliding window", ablate(model, sliding_window=0), "long", tail),
            ]
    print("  ablations: agreement with one convention flipped; effect = rms(flipped - chosen); "
          "lean = how far llama.cpp leans toward the flipped variant (0 = chosen, 1 = flipped; "
          "only meaningful when the effect is well above the ~0.2-0.4 rms peer noise):")
    for label, alt, case, start in abl:
        rows = slice(start, None)
        a = alt.forward(cases[case])[rows]
        r, p = ref_logits[case][rows], peer_logits[case][rows]
        where = f"{case}[{start}:]" if start else case
        eff = compare(a, r)["rms"]
        print(f"    {label:34s} {where:10s} effect rms={eff:.3f} lean={lean(r, a, p):+.3f} "
              f"{fmt(compare(a, p))}")
        if start:  # the chosen variant on the same rows, for comparison
            print(f"    {'(chosen)':34s} {where:10s} lean=+0.000 {fmt(compare(r, p))}")

    if hp.arch == "gemma3" and not quick:
        window_edge_check(path)

    print("  golden greedy continuations (reference vs llama.cpp), pinned by the pytest:")
    for text, n_new in golden_prompts:
        ids = peer.tokenize(text)
        g_ref, margins, values = greedy(model.forward, ids, n_new)
        g_peer, _, _ = greedy(peer.logits, ids, n_new)
        tag = "same" if g_ref == g_peer else "DIFFER"
        print(f"    {text!r} {ids} -> ref {g_ref} peer {tag}; ref margins {margins}; "
              f"ref logits {values}")


def patched(model: ReferenceModel, name: str, fn) -> ReferenceModel:
    """A copy of model whose forward runs with numpy_forward.<name> replaced by fn."""
    from reference import numpy_forward as nf

    class _Patched(ReferenceModel):
        def forward(self, tokens):
            orig = getattr(nf, name)
            setattr(nf, name, fn)
            try:
                return super().forward(tokens)
            finally:
                setattr(nf, name, orig)

    alt = _Patched.__new__(_Patched)
    alt.__dict__.update(model.__dict__)
    return alt


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x) (the alternative to the tanh approximation)."""
    erf = np.vectorize(math.erf, otypes=[np.float32])
    return np.float32(0.5) * x * (np.float32(1.0) + erf(x / np.float32(math.sqrt(2.0))))


def attend_kv_interleaved(q, k, v, scale, mask, softcap):
    """numpy_forward.attend, but query head h reads KV head h % n_head_kv (np.tile order)."""
    n_head, n_kv = q.shape[1], k.shape[1]
    group = n_head // n_kv
    idx = [(h % n_kv) * group + h // n_kv for h in range(n_head)]  # head h -> slot idx[h]
    q2 = np.empty_like(q)
    q2[:, idx] = q
    o2 = _attend_grouped(q2, k, v, scale, mask, softcap).reshape(q.shape[0], n_head, -1)
    return o2[:, idx].reshape(q.shape[0], -1)


def window_edge_check(path: str, window: int = 8, n_tokens: int = 64) -> None:
    """Decide the sliding-window off-by-one: the real window (512) is too long for a 1-token shift
    to rise above llama.cpp's noise, so patch `gemma3.attention.sliding_window` to a small value
    in a temporary copy of the file and compare windows window-1, window, window+1 there."""
    key = b"gemma3.attention.sliding_window"
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    at = head.index(key) + len(key)
    vtype, value = struct.unpack_from("<II", head, at)
    assert vtype == 4, "sliding_window is expected as uint32"
    with tempfile.TemporaryDirectory() as d:
        dst = os.path.join(d, f"window{window}.gguf")
        shutil.copyfile(path, dst)
        with open(dst, "r+b") as f:
            f.seek(at + 4)
            f.write(struct.pack("<I", window))
        model = ReferenceModel(dst)
        peer = Peer(dst)
        ids = peer.tokenize(LONG_TEXT)[:n_tokens]
        ref, pl = model.forward(ids), peer.logits(ids)
        print(f"  window edge (file patched {value} -> {window}, {n_tokens} tokens):")
        print(f"    {'window ' + str(window) + ' (chosen)':34s} {fmt(compare(ref, pl))}")
        for w in (window - 1, window + 1):
            alt = ablate(model, sliding_window=w).forward(ids)
            print(f"    {'window ' + str(w):34s} lean={lean(ref, alt, pl):+.3f} "
                  f"{fmt(compare(alt, pl))}")
        del peer


# (text, n_new) whose greedy continuations test_reference_forward.py pins; chosen so that every
# step's top1-top2 logit margin is >= 1 (robust to BLAS / summation-order differences).
GOLDEN_PROMPTS = {
    "smollm2": [("1, 2, 3, 4, 5,", 6), ("The capital of France is", 4)],
    "gemma3": [("The quick brown fox", 6), ("Monday, Tuesday, Wednesday,", 6)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip parser check and long ablations")
    args = ap.parse_args()
    run_model("SmolLM2-135M-Instruct Q4_1", str(smollm2_path()), GOLDEN_PROMPTS["smollm2"],
              args.quick)
    run_model("Gemma 3 270M Q4_K_M", str(gemma3_path()), GOLDEN_PROMPTS["gemma3"], args.quick)


if __name__ == "__main__":
    main()
