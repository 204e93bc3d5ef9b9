"""Tiny random vision projectors (llama.cpp's mmproj GGUF layout) and their numpy reference.

write_tiny_mmproj() writes a `gemma3` (SigLIP + average pool + soft norm + linear) or `mlp`
(CLIP with class token + penultimate layer + two-layer MLP) projector with the real metadata
keys and tensor names; reference_embeddings() computes the same encoder + projector in float64
numpy from the weights as stored (F16 weights rounded first). Sizes are small on purpose.
Must not: use lanner's code: this is what the core is compared against.
"""

from __future__ import annotations

import numpy as np
import gguf

# projector -> shapes: image side, patch side, encoder width, FFN width, heads, blocks, merge
SHAPES = {
    "gemma3": dict(image=32, patch=4, n_embd=32, n_ff=64, n_head=4, n_layer=2, merge=2),
    "mlp": dict(image=32, patch=8, n_embd=32, n_ff=64, n_head=4, n_layer=3, hidden=48),
}


def n_image_tokens(proj: str) -> int:
    s = SHAPES[proj]
    side = s["image"] // s["patch"]
    return (side // s["merge"]) ** 2 if proj == "gemma3" else side * side


def mmproj_tensors(proj: str, n_embd_out: int, seed: int = 0, shape: dict | None = None) -> dict[str, np.ndarray]:
    """name -> float32 array in numpy order (ggml ne reversed). shape: SHAPES[proj] overrides."""
    s = {**SHAPES[proj], **(shape or {})}
    rng = np.random.default_rng(seed)
    d, ff, p = s["n_embd"], s["n_ff"], s["patch"]
    side = s["image"] // p

    def mat(n_out, n_in):
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    def bias(n):
        return 0.1 * rng.standard_normal(n)

    n_pos = side * side + (1 if proj == "mlp" else 0)
    t = {"v.patch_embd.weight": rng.standard_normal((d, 3, p, p)) / np.sqrt(3 * p * p),
         "v.patch_embd.bias": bias(d),
         "v.position_embd.weight": 0.5 * rng.standard_normal((n_pos, d))}
    if proj == "mlp":
        t["v.class_embd"] = rng.standard_normal(d)
        t["v.pre_ln.weight"], t["v.pre_ln.bias"] = norm(d), bias(d)
    for i in range(s["n_layer"]):
        b = f"v.blk.{i}."
        t[b + "ln1.weight"], t[b + "ln1.bias"] = norm(d), bias(d)
        for n in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t[b + n + ".weight"], t[b + n + ".bias"] = mat(d, d), bias(d)
        t[b + "ln2.weight"], t[b + "ln2.bias"] = norm(d), bias(d)
        t[b + "ffn_up.weight"], t[b + "ffn_up.bias"] = mat(ff, d), bias(ff)
        t[b + "ffn_down.weight"], t[b + "ffn_down.bias"] = mat(d, ff), bias(d)
    if proj == "gemma3":
        t["v.post_ln.weight"], t["v.post_ln.bias"] = norm(d), bias(d)
        t["mm.soft_emb_norm.weight"] = norm(d)
        t["mm.input_projection.weight"] = rng.standard_normal((d, n_embd_out)) / np.sqrt(d)  # ne [out, d]
    else:
        h = s["hidden"]
        t["mm.0.weight"], t["mm.0.bias"] = mat(h, d), bias(h)
        t["mm.2.weight"], t["mm.2.bias"] = mat(n_embd_out, h), bias(n_embd_out)
    return {k: v.astype(np.float32) for k, v in t.items()}


def write_tiny_mmproj(path, proj: str = "gemma3", n_embd_out: int = 64, weight_type: str = "F32",
                      seed: int = 0, skip_tensors=(), tensor_overrides=None, shape: dict | None = None,
                      keep_f32=("v.position_embd.weight",), **kv) -> str:
    """Write a tiny `proj` projector to `path`. weight_type: F32 or F16 for tensors of >= 2 dims
    (1-D norms and biases stay F32, and so do the tensors in keep_f32: llama.cpp's converter
    keeps position embeddings F32, which its graph adds without a cast). kv: `clip.*` key overrides
    (value None drops the key). shape: SHAPES[proj] overrides (e.g. a full-size SigLIP)."""
    s = {**SHAPES[proj], **(shape or {})}
    meta = {
        "clip.has_vision_encoder": True,
        "clip.projector_type": proj,
        "clip.use_gelu": True,
        "clip.vision.image_size": s["image"],
        "clip.vision.patch_size": s["patch"],
        "clip.vision.embedding_length": s["n_embd"],
        "clip.vision.feed_forward_length": s["n_ff"],
        "clip.vision.block_count": s["n_layer"],
        "clip.vision.attention.head_count": s["n_head"],
        "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.projection_dim": n_embd_out,
        "clip.vision.image_mean": [0.5, 0.5, 0.5] if proj == "gemma3" else [0.48145466, 0.4578275, 0.40821073],
        "clip.vision.image_std": [0.5, 0.5, 0.5] if proj == "gemma3" else [0.26862954, 0.26130258, 0.27577711],
    }
    if proj == "gemma3":
        meta["clip.vision.projector.scale_factor"] = s["merge"]
    meta.update(kv)
    w = gguf.GGUFWriter(str(path), "clip")
    for key, val in meta.items():
        if val is None:
            continue
        if isinstance(val, bool):
            w.add_bool(key, val)
        elif isinstance(val, int):
            w.add_uint32(key, val)
        elif isinstance(val, float):
            w.add_float32(key, val)
        elif isinstance(val, str):
            w.add_string(key, val)
        else:
            w.add_array(key, [float(x) for x in val])
    tensors = mmproj_tensors(proj, n_embd_out, seed, shape)
    tensors.update(tensor_overrides or {})
    for name, arr in tensors.items():
        if name in skip_tensors:
            continue
        if arr.ndim >= 2 and weight_type == "F16" and name not in keep_f32:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# ---- reference ----------------------------------------------------------------------------------

def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _block(x, t, i, n_head, eps):
    b = f"v.blk.{i}."
    lin = lambda h, n: h @ t[b + n + ".weight"].T + t[b + n + ".bias"]  # noqa: E731
    h = _layer_norm(x, t[b + "ln1.weight"], t[b + "ln1.bias"], eps)
    n_pos, d = h.shape
    hd = d // n_head
    q, k, v = (lin(h, n).reshape(n_pos, n_head, hd).transpose(1, 0, 2) for n in ("attn_q", "attn_k", "attn_v"))
    s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)  # (n_head, n_pos, n_pos), no mask
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v  # (n_head, n_pos, hd)
    x = x + lin(a.transpose(1, 0, 2).reshape(n_pos, d), "attn_out")
    h = _layer_norm(x, t[b + "ln2.weight"], t[b + "ln2.bias"], eps)
    return x + lin(_gelu(lin(h, "ffn_up")), "ffn_down")


def reference_embeddings(proj: str, pixels: np.ndarray, n_embd_out: int = 64, weight_type: str = "F32",
                         seed: int = 0, eps: float = 1e-6, cls_last: bool = False) -> np.ndarray:
    """pixels: (3, S, S) normalised -> (n_tokens, n_embd_out) float64.
    cls_last: the layout llama.cpp's llava graph uses since its graph refactor (its issue #25814:
    class row after the patches, positions 0..n in row order, rows 1..n kept), to tell that
    known difference from any other in tests/reference/check_vision_llama_cpp.py."""
    s = SHAPES[proj]
    t = mmproj_tensors(proj, n_embd_out, seed)
    if weight_type == "F16":  # as written with the default keep_f32
        t = {k: v.astype(np.float16) if v.ndim >= 2 and k != "v.position_embd.weight" else v for k, v in t.items()}
    t = {k: v.astype(np.float64) for k, v in t.items()}
    p, side = s["patch"], s["image"] // s["patch"]
    x = pixels.astype(np.float64).reshape(3, side, p, side, p).transpose(1, 3, 0, 2, 4)  # (py, px, c, ky, kx)
    x = x.reshape(side * side, 3 * p * p) @ t["v.patch_embd.weight"].reshape(s["n_embd"], -1).T
    x = x + t["v.patch_embd.bias"]  # (n_patches, d), row-major patches
    if proj == "mlp":
        cls = t["v.class_embd"][None, :]
        x = np.concatenate([x, cls] if cls_last else [cls, x], 0)
    x = x + t["v.position_embd.weight"]
    if proj == "mlp":
        x = _layer_norm(x, t["v.pre_ln.weight"], t["v.pre_ln.bias"], eps)
        for i in range(s["n_layer"] - 1):  # the penultimate layer's output
            x = _block(x, t, i, s["n_head"], eps)
        x = x[1:]
        return _gelu(x @ t["mm.0.weight"].T + t["mm.0.bias"]) @ t["mm.2.weight"].T + t["mm.2.bias"]
    for i in range(s["n_layer"]):
        x = _block(x, t, i, s["n_head"], eps)
    x = _layer_norm(x, t["v.post_ln.weight"], t["v.post_ln.bias"], eps)
    m = s["merge"]
    o = side // m
    x = x.reshape(o, m, o, m, -1).mean(axis=(1, 3)).reshape(o * o, -1)  # average pool, row-major
    x = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * t["mm.soft_emb_norm.weight"]
    return x @ t["mm.input_projection.weight"]
