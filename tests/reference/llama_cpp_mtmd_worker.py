"""Runs in a subprocess of check_vision_llama_cpp.py: llama.cpp's multimodal library (libmtmd,
through the ctypes bindings of the llama-cpp-python sdist) on one text model + projector pair.

argv: job.json. The job names the model, the projector, the prompt (with llama.cpp's media
marker), images as .npy (H, W, 3) uint8 and how many greedy tokens to generate. Writes, per
image, an .npz with llama.cpp's chunks (text ids, image embeddings) and its greedy tokens.
Never imported by lanner or its tests: the libraries load only into this process (their
folder comes in LLAMA_CPP_LIB_PATH / MTMD_CPP_LIB, never LD_LIBRARY_PATH of a lanner process).
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from pathlib import Path

import numpy as np


def _bindings(py_dir: str):
    """llama_cpp.llama_cpp and llama_cpp.mtmd_cpp without the package's __init__ (which pulls in
    the high-level API and its dependencies)."""
    pkg = types.ModuleType("llama_cpp")
    pkg.__path__ = [str(Path(py_dir) / "llama_cpp")]
    sys.modules["llama_cpp"] = pkg
    import llama_cpp.llama_cpp as L
    import llama_cpp.mtmd_cpp as M

    return L, M


def _chunks(M, ctx, prompt: str, img: np.ndarray):
    h, w, _ = img.shape
    data = (ctypes.c_uint8 * img.size).from_buffer_copy(np.ascontiguousarray(img).tobytes())
    bmp = M.mtmd_bitmap_init(w, h, data)
    text = M.mtmd_input_text()
    raw = prompt.replace("<__media__>", M.mtmd_default_marker().decode()).encode()
    text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), True, True
    chunks = M.mtmd_input_chunks_init()
    bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bmp)
    rc = M.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1)
    if rc != 0:
        raise RuntimeError(f"mtmd_tokenize failed: {rc}")
    return chunks, bmp


def run(job: dict) -> None:
    L, M = _bindings(job["py_dir"])
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(job["model"].encode(), mp)
    if not model:
        raise RuntimeError("llama.cpp could not load the text model")
    cp = M.mtmd_context_params_default()
    cp.use_gpu, cp.n_threads, cp.print_timings, cp.warmup = False, int(job.get("threads", 2)), False, False
    ctx = M.mtmd_init_from_file(job["mmproj"].encode(), model, cp)
    if not ctx:
        raise RuntimeError("llama.cpp could not load the projector")
    n_embd = L.llama_model_n_embd(model)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    for k, img_path in enumerate(job["images"]):
        img = np.load(img_path)
        chunks, bmp = _chunks(M, ctx, job["prompt"], img)
        kinds, text_ids, embds = [], [], []
        for i in range(M.mtmd_input_chunks_size(chunks)):
            ch = M.mtmd_input_chunks_get(chunks, i)
            if M.mtmd_input_chunk_get_type(ch) == 0:  # text
                n = ctypes.c_size_t()
                ptr = M.mtmd_input_chunk_get_tokens_text(ch, ctypes.byref(n))
                kinds.append("text")
                text_ids.append(np.array([ptr[j] for j in range(n.value)], np.int32))
            else:
                n_tok = M.mtmd_input_chunk_get_n_tokens(ch)
                if M.mtmd_encode_chunk(ctx, ch) != 0:
                    raise RuntimeError("mtmd_encode_chunk failed")
                out = M.mtmd_get_output_embd(ctx)
                kinds.append("image")
                embds.append(np.ctypeslib.as_array(out, shape=(n_tok * n_embd,)).reshape(n_tok, n_embd).copy())
        # greedy tokens from a fresh context: llama.cpp's own evaluation of the chunks
        lp = L.llama_context_default_params()
        lp.n_ctx, lp.n_batch, lp.n_ubatch, lp.n_threads, lp.n_threads_batch = 512, 512, 512, 2, 2
        lctx = L.llama_init_from_model(model, lp)
        n_past = L.llama_pos(0)
        if M.mtmd_helper_eval_chunks(ctx, lctx, chunks, 0, 0, 512, True, ctypes.byref(n_past)) != 0:
            raise RuntimeError("mtmd_helper_eval_chunks failed")
        greedy, first, steps = [], None, []
        for _ in range(int(job["n_greedy"])):
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(lctx, -1), shape=(n_vocab,))
            first = logits.copy() if first is None else first  # the prompt's last logits row
            steps.append(logits.copy())
            tok = int(np.argmax(logits))
            greedy.append(tok)
            arr = (L.llama_token * 1)(tok)
            if L.llama_decode(lctx, L.llama_batch_get_one(arr, 1)) != 0:
                raise RuntimeError("llama_decode failed")
        L.llama_free(lctx)
        M.mtmd_input_chunks_free(chunks)
        M.mtmd_bitmap_free(bmp)
        np.savez(Path(job["out"]) / f"image{k}.npz", kinds=np.array(kinds), greedy=np.array(greedy, np.int32),
                 logits=first, steps=np.stack(steps),
                 **{f"text{i}": t for i, t in enumerate(text_ids)}, **{f"embd{i}": e for i, e in enumerate(embds)})
    M.mtmd_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
