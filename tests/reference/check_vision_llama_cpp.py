"""lanner's vision projectors against llama.cpp's multimodal library (not run in CI).

For each tiny random pair (Gemma 3 text + `gemma3` projector; Llama 3-style text + `mlp`
projector, written by tests/tiny_vlm.py / tiny_gguf.py / tiny_mmproj.py) and 3 test images at
the projector's input size (so neither side resizes): the image embeddings of llama.cpp
(libmtmd, in a subprocess: llama_cpp_mtmd_worker.py) and of lanner, cosine per row; then the
text model fed the image: greedy tokens from llama.cpp's own evaluation of its chunks and from
lanner's engine on the same text ids + lanner's embeddings. Writes a Markdown table.

    python tests/reference/check_vision_llama_cpp.py --lib /root/.cache/lanner-peers/<build>/bin \
        --sdist /tmp/fa_lcp/llama_cpp_python-0.3.36.tar.gz --out tests/reference/vision_llama_cpp.md
    python tests/reference/check_vision_llama_cpp.py --cls-fixed \
        --lib /root/.cache/lanner-peers/llama.cpp-0.3.36-clsfix/bin --out /tmp/clsfix.md

--lib: the folder holding llama.cpp's shared libraries (libllama, libmtmd, libggml*), built from
the llama.cpp the llama-cpp-python sdist vendors. Only the worker process loads them.
--cls-fixed: that libmtmd has the llava CLS-first fix (bench/build_llava_cls_fix.sh), so the
`mlp` pair must agree with lanner too; without it, the `mlp` pair is held to llama.cpp's own
CLS-last layout (its issue #25814). Exit status 0 when every row meets its expectation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

import tiny_gguf  # noqa: E402
import tiny_mmproj as tm  # noqa: E402
import tiny_vlm  # noqa: E402

N_GREEDY = 8


def test_images(side: int) -> list[np.ndarray]:
    """(H, W, 3) uint8: noise, a colour gradient, a checkerboard."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:side, 0:side]
    grad = np.stack([xx * 255 // (side - 1), yy * 255 // (side - 1), 255 - xx * 255 // (side - 1)], -1)
    check = (((xx // 4 + yy // 4) % 2) * 255)[..., None].repeat(3, -1)
    return [rng.integers(0, 256, (side, side, 3)), grad, check]


def sdist_python(sdist: str, into: Path) -> str:
    """The sdist's llama_cpp/ package (ctypes bindings only) unpacked under `into`."""
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if "/llama_cpp/" in m.name and m.name.endswith(".py")
                   and "/server/" not in m.name]
        tf.extractall(into, members)
    top = next(into.iterdir())
    return str(top)


def llama_cpp_side(job: dict, lib: str, work: Path) -> list[dict]:
    (work / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env.update(LLAMA_CPP_LIB_PATH=lib, MTMD_CPP_LIB=lib, LD_LIBRARY_PATH=lib)  # the worker only
    worker = Path(__file__).with_name("llama_cpp_mtmd_worker.py")
    r = subprocess.run([sys.executable, str(worker), str(work / "job.json")], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp worker failed:\n{r.stderr[-4000:]}")
    out = []
    for k in range(len(job["images"])):
        z = np.load(Path(job["out"]) / f"image{k}.npz")
        kinds = list(z["kinds"])
        chunks, ti, ei = [], 0, 0
        for kind in kinds:
            if kind == "text":
                chunks.append(("text", z[f"text{ti}"].tolist()))
                ti += 1
            else:
                chunks.append(("image", z[f"embd{ei}"]))
                ei += 1
        out.append({"chunks": chunks, "greedy": z["greedy"].tolist(), "logits": z["logits"]})
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _last_logits(llm, ids: list[int], rows: np.ndarray, bidirectional: bool) -> np.ndarray:
    """The prompt's last logits row from lanner's core: image rows in place, bidirectional
    inside the image for Gemma 3 (the engine's decode_args), one fresh context."""
    from lanner import _core
    from lanner.engine.image_spans import decode_args

    ctx = _core.Context(llm.model, n_ctx=512, n_batch=512, n_seq_max=1, n_threads=2)
    toks = np.asarray(ids, np.int64)
    pos = np.arange(len(ids), dtype=np.int32)
    key = next(-t - 1 >> 16 for t in ids if t < 0)
    args = decode_args(toks, pos, {key: rows}, bidirectional)
    want = np.zeros(len(ids), np.uint8)
    want[-1] = 1
    return np.array(ctx.decode(args.pop("tokens"), pos, np.zeros(len(ids), np.int32), want, **args)[0])


def lanner_side(text: str, mmproj: str, images: list[np.ndarray], theirs: list[dict]) -> list[dict]:
    from PIL import Image

    import lanner
    from lanner.engine.image_spans import span_ids
    from lanner.types import PromptIds
    from lanner.vision.preprocess import to_pixels

    rows = []
    with lanner.LLM(text, mmproj=mmproj, n_ctx=512, n_threads=2) as llm:
        for img, th in zip(images, theirs):
            key, mine = llm.vision.embed(Image.fromarray(img.astype(np.uint8)))
            ref = next(e for kind, e in th["chunks"] if kind == "image")
            cos = _cos(mine, ref)
            # the numpy reference on lanner's normalised pixels, in both CLS layouts (mlp only)
            px = to_pixels(Image.fromarray(img.astype(np.uint8)), llm.vision.spec)
            proj = llm.vision.projector
            ref_np = tm.reference_embeddings(proj, px, n_embd_out=mine.shape[1])
            ref_last = tm.reference_embeddings(proj, px, n_embd_out=mine.shape[1], cls_last=True)
            ids: list[int] = []
            for kind, v in th["chunks"]:
                ids += v if kind == "text" else span_ids(key, len(mine))
            r = llm.generate(PromptIds(ids, {key: mine}), max_tokens=N_GREEDY, temperature=0, ignore_eos=True)
            # lanner's text side on llama.cpp's rows: under another key (the prefix cache knows
            # the first one's cells, computed from lanner's rows)
            k2 = (key + 1) % (1 << 46)
            ids2 = [t if t >= 0 else span_ids(k2, len(mine))[(-t - 1) & 0xFFFF] for t in ids]
            fed = llm.generate(PromptIds(ids2, {k2: ref.astype(np.float32)}), max_tokens=N_GREEDY,
                               temperature=0, ignore_eos=True)
            logits = _last_logits(llm, ids, mine, llm.vision.bidirectional)
            lc = float(_cos(logits[None], th["logits"][None])[0])
            other = _last_logits(llm, ids, mine, not llm.vision.bidirectional)  # the other mask
            lc_other = float(_cos(other[None], th["logits"][None])[0])
            rows.append({"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "n_tokens": len(mine),
                         "lanner_vs_numpy": float(_cos(mine, ref_np).min()), "logits_cos": lc, "logits_cos_other": lc_other, "greedy_fed": fed.token_ids,
                         "fed_logits_cos": float(_cos(_last_logits(llm, ids, ref.astype(np.float32), llm.vision.bidirectional)[None],
                                                      th["logits"][None])[0]),
                         "llama_cpp_vs_numpy": float(_cos(ref, ref_np).min()),
                         "llama_cpp_vs_numpy_cls_last": float(_cos(ref, ref_last).min()),
                         "greedy_lanner": r.token_ids, "greedy_llama_cpp": th["greedy"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="folder with llama.cpp's libllama/libmtmd/libggml*")
    ap.add_argument("--sdist", default="/tmp/fa_lcp/llama_cpp_python-0.3.36.tar.gz")
    ap.add_argument("--out", default=str(Path(__file__).with_name("vision_llama_cpp.md")))
    ap.add_argument("--append", action="store_true", help="add this run's table to --out (a second peer)")
    ap.add_argument("--cls-fixed", action="store_true",
                    help="the libmtmd has the llava CLS-first fix: hold the mlp pair to lanner's layout")
    args = ap.parse_args()
    intro = ["# lanner's vision projectors vs llama.cpp's libmtmd (tests/reference/check_vision_llama_cpp.py)", "",
             "min cos per row over the image's embedding rows. numpy: tests/tiny_mmproj.py's reference "
             "on lanner's normalised pixels (CLS first, as Hugging Face's CLIP); numpy CLS-last: the "
             "layout of llama.cpp's llava graph (llama.cpp issue #25814). Last logits: the prompt's last "
             "row, lanner's core (its embeddings) vs llama.cpp's evaluation of its own chunks; 'other "
             "image mask' is lanner with the image read causally for gemma3 / bidirectionally for "
             "mlp, to show the mask is what matches. Last column: lanner's engine fed llama.cpp's "
             "embedding rows, greedy tokens against llama.cpp's.", ""]
    peer = ("llama.cpp with the llava CLS-first fix (PR #25844, bench/build_llava_cls_fix.sh)" if args.cls_fixed
            else "llama.cpp as shipped (llava puts the class token after the patches: issue #25814)")
    lines = [f"## {peer}", "", f"libmtmd from `{Path(args.lib).resolve()}`, llama-cpp-python "
             f"{Path(args.sdist).name}.", "",
             "| pair | image | rows | lanner vs llama.cpp | lanner vs numpy | llama.cpp vs numpy | "
             "llama.cpp vs numpy CLS-last | last logits cos | same, other image mask | greedy tokens (lanner, llama.cpp) | lanner fed llama.cpp's rows |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ok = True
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        py_dir = sdist_python(args.sdist, work / "sdist")
        pairs = {
            "gemma3 + gemma3 projector": (
                tiny_vlm.write_tiny_gemma3(work / "g3.gguf"),
                tm.write_tiny_mmproj(work / "g3-mmproj.gguf", "gemma3", n_embd_out=tiny_vlm.N_EMBD),
                "<start_of_turn>user\n<__media__>Describe the image.<end_of_turn>\n<start_of_turn>model\n"),
            "llama3 + mlp projector": (
                tiny_gguf.write_tiny_family(work / "l3.gguf", "llama3"),
                tm.write_tiny_mmproj(work / "l3-mmproj.gguf", "mlp", n_embd_out=64),
                "USER: <__media__>\nDescribe the image. ASSISTANT:"),
        }
        for name, (text, mmproj, prompt) in pairs.items():
            side = tm.SHAPES["gemma3" if "gemma3 p" in name else "mlp"]["image"]
            images = test_images(side)
            paths = []
            for k, img in enumerate(images):
                p = work / f"{len(paths)}-{k}.npy"
                np.save(p, img.astype(np.uint8))
                paths.append(str(p))
            out = work / name.split()[0]
            out.mkdir()
            job = {"py_dir": py_dir, "model": text, "mmproj": mmproj, "prompt": prompt,
                   "images": paths, "n_greedy": N_GREEDY, "out": str(out)}
            theirs = llama_cpp_side(job, args.lib, work)
            for k, row in enumerate(lanner_side(text, mmproj, images, theirs)):
                same = row["greedy_lanner"] == row["greedy_llama_cpp"]
                ok &= row["greedy_fed"] == row["greedy_llama_cpp"] and row["lanner_vs_numpy"] >= 0.9999
                if "mlp" in name and not args.cls_fixed:  # llama.cpp's CLS-last layout (#25814)
                    ok &= row["llama_cpp_vs_numpy_cls_last"] >= 0.999
                else:  # the same embeddings and the same greedy tokens
                    ok &= row["llama_cpp_vs_numpy"] >= 0.999 and row["cos_min"] >= 0.999 and same
                lines.append(f"| {name} | {k} | {row['n_tokens']} | {row['cos_min']:.7f} | {row['lanner_vs_numpy']:.7f} | "
                             f"{row['llama_cpp_vs_numpy']:.7f} | {row['llama_cpp_vs_numpy_cls_last']:.7f} | {row['logits_cos']:.7f} | {row['logits_cos_other']:.7f} | "
                             f"{'equal' if same else 'DIFFER'}: {row['greedy_lanner']}, {row['greedy_llama_cpp']} | "
                             f"{'equal' if row['greedy_fed'] == row['greedy_llama_cpp'] else 'DIFFER'} {row['greedy_fed']} (logits cos {row['fed_logits_cos']:.7f}) |")
    out = Path(args.out)
    head = out.read_text() + "\n" if args.append and out.exists() else "\n".join(intro) + "\n"
    text = "\n".join(lines) + "\n"
    out.write_text(head + text)
    print(text)
    print("every row as expected" if ok else "SOME ROW IS NOT AS EXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
