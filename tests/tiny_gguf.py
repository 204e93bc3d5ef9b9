"""Tiny random-weight GGUF models written with the `gguf` package at test time.

Covers what no small real model covers (damaged files, other shapes). write_tiny_llama()
writes a valid `llama` model with a byte-level toy vocabulary; keyword overrides change or
drop metadata keys (value None = drop) and tensors (skip_tensors, tensor_overrides).
"""

from __future__ import annotations

import numpy as np
import gguf

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, N_VOCAB = 32, 4, 2, 64, 2, 64


def tiny_llama_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """name -> float32 array in numpy order (ggml ne reversed)."""
    rng = np.random.default_rng(seed)
    hd = N_EMBD // N_HEAD
    t = {
        "token_embd.weight": rng.standard_normal((N_VOCAB, N_EMBD)),
        "output_norm.weight": 1.0 + 0.1 * rng.standard_normal(N_EMBD),
    }
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(N_EMBD)
        t[p + "attn_q.weight"] = rng.standard_normal((N_HEAD * hd, N_EMBD)) / np.sqrt(N_EMBD)
        t[p + "attn_k.weight"] = rng.standard_normal((N_HEAD_KV * hd, N_EMBD)) / np.sqrt(N_EMBD)
        t[p + "attn_v.weight"] = rng.standard_normal((N_HEAD_KV * hd, N_EMBD)) / np.sqrt(N_EMBD)
        t[p + "attn_output.weight"] = rng.standard_normal((N_EMBD, N_HEAD * hd)) / np.sqrt(N_EMBD)
        t[p + "ffn_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(N_EMBD)
        t[p + "ffn_gate.weight"] = rng.standard_normal((N_FF, N_EMBD)) / np.sqrt(N_EMBD)
        t[p + "ffn_up.weight"] = rng.standard_normal((N_FF, N_EMBD)) / np.sqrt(N_EMBD)
        t[p + "ffn_down.weight"] = rng.standard_normal((N_EMBD, N_FF)) / np.sqrt(N_FF)
    return {k: v.astype(np.float32) for k, v in t.items()}


def write_tiny_llama(path, arch: str = "llama", skip_tensors=(), tensor_overrides=None,
                     weight_type: str = "F32", **kv) -> str:
    """Write a tiny llama GGUF to `path`. kv: '<arch>.<key>' style suffixes, e.g. block_count=2.
    weight_type: a GGMLQuantizationType name the 2-D weights are stored in (quantized by `gguf`)."""
    meta = {
        "context_length": 128,
        "embedding_length": N_EMBD,
        "block_count": N_LAYER,
        "feed_forward_length": N_FF,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_HEAD_KV,
        "attention.layer_norm_rms_epsilon": 1e-5,
        "rope.freq_base": 10000.0,
    }
    meta.update(kv)
    w = gguf.GGUFWriter(str(path), arch)
    for key, val in meta.items():
        if val is None:
            continue
        full = f"{arch}.{key}"
        if isinstance(val, bool):
            w.add_bool(full, val)
        elif isinstance(val, int):
            w.add_uint32(full, val)
        elif isinstance(val, float):
            w.add_float32(full, val)
        else:
            w.add_string(full, str(val))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([f"<t{i}>" for i in range(N_VOCAB)])
    w.add_token_types([1] * N_VOCAB)
    w.add_token_merges([])
    tensors = tiny_llama_tensors()
    tensors.update(tensor_overrides or {})
    qtype = gguf.GGMLQuantizationType[weight_type]
    for name, arr in tensors.items():
        if name in skip_tensors:
            continue
        if arr.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)
