"""Tiny random-weight GGUF models written with the `gguf` package at test time.

Covers what no small real model covers (damaged files, other shapes, other families).
write_tiny_llama() writes a valid `llama` model with a byte-level toy vocabulary;
write_tiny_family() writes one model per family of FAMILIES with the family's real tensor names
and metadata keys and a small trained vocabulary (tests/tiny_vocab.py). For both, keyword
overrides change or drop metadata keys (value None = drop) and tensors (skip_tensors,
tensor_overrides); weight_type is the type 2-D weights are stored in.
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
    _write_tensors(w, tensors, skip_tensors, weight_type)
    return str(path)


def _write_tensors(w, tensors: dict, skip_tensors, weight_type: str) -> None:
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


# ---- families -----------------------------------------------------------------------------------

FAMILIES = ("llama3", "mistral", "gemma2", "phi3")

# family -> (general.architecture, vocabulary, shapes, metadata). Shapes: n_embd, n_head,
# n_head_kv, head_dim, n_ff, n_layer. Small caps / windows so that a 20-token prompt exercises them.
_FAMILY = {
    # Llama 3.1-style RoPE: factors baked into rope_freqs as the converter does (below)
    "llama3": ("llama", "llama3", (64, 4, 2, 16, 128, 2), {
        "context_length": 2048, "rope.freq_base": 500000.0, "rope.dimension_count": 16,
        "attention.layer_norm_rms_epsilon": 1e-5}),
    # Mistral v0.1-style: SentencePiece vocabulary, a sliding window on every layer
    "mistral": ("llama", "spm-llama", (64, 4, 2, 16, 128, 2), {
        "context_length": 2048, "rope.freq_base": 10000.0, "attention.sliding_window": 6,
        "attention.layer_norm_rms_epsilon": 1e-5}),
    # Gemma 2: key_length != n_embd / n_head, 4 layers (local, global, local, global)
    "gemma2": ("gemma2", "spm-gemma", (64, 4, 2, 32, 128, 4), {
        "context_length": 8192, "rope.freq_base": 10000.0, "attention.key_length": 32,
        "attention.value_length": 32, "attention.sliding_window": 6,
        "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
        "attention.layer_norm_rms_epsilon": 1e-6}),
    # Phi-3 128k-style: fused qkv and gate/up, LongRoPE factors, original context 64
    "phi3": ("phi3", "spm-llama", (64, 4, 2, 16, 96, 2), {
        "context_length": 2048, "rope.freq_base": 10000.0, "rope.dimension_count": 16,
        "rope.scaling.original_context_length": 64, "rope.scaling.attn_factor": 1.1902,
        "attention.layer_norm_rms_epsilon": 1e-5}),
}

# Llama 3.1's rope_scaling (factor 8, low 1, high 4) against a 32-token "original" context.
LLAMA3_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original": 32}


def llama3_rope_freqs(n_rot: int, base: float, factor: float, low_freq_factor: float,
                      high_freq_factor: float, original: int) -> np.ndarray:
    """The `rope_freqs` tensor [n_rot/2] of a Llama 3.1+ GGUF: per frequency, the divisor of its
    angle (1 for short wavelengths, `factor` for long ones, a smooth blend in between), as
    Meta's `apply_scaling` defines it."""
    inv_freq = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    wavelen = 2 * np.pi / inv_freq
    low_wavelen, high_wavelen = original / low_freq_factor, original / high_freq_factor
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    scaled = 1.0 / ((1 - smooth) / factor + smooth)  # inv_freq is multiplied by 1/divisor
    out = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, scaled))
    return out.astype(np.float32)


def family_tensors(family: str, n_vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> float32 array (numpy order) of a tiny model of `family`."""
    _arch, _vocab, (n_embd, n_head, n_head_kv, hd, n_ff, n_layer), _meta = _FAMILY[family]
    rng = np.random.default_rng(seed)

    def mat(n_out, n_in):
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    q_dim, kv_dim = n_head * hd, n_head_kv * hd
    # Gemma multiplies embeddings by sqrt(n_embd): keep its hidden state at unit scale
    emb_scale = 1.0 / np.sqrt(n_embd) if family == "gemma2" else 1.0
    t = {"token_embd.weight": emb_scale * rng.standard_normal((n_vocab, n_embd)),
         "output_norm.weight": norm(n_embd)}
    if family in ("llama3", "phi3"):
        t["output.weight"] = mat(n_vocab, n_embd)  # untied (gemma2, mistral: tied)
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = norm(n_embd)
        if family == "phi3":
            t[p + "attn_qkv.weight"] = mat(q_dim + 2 * kv_dim, n_embd)
        else:
            t[p + "attn_q.weight"] = mat(q_dim, n_embd)
            t[p + "attn_k.weight"] = mat(kv_dim, n_embd)
            t[p + "attn_v.weight"] = mat(kv_dim, n_embd)
        t[p + "attn_output.weight"] = mat(n_embd, q_dim)
        t[p + "ffn_norm.weight"] = norm(n_embd)
        if family == "phi3":
            t[p + "ffn_up.weight"] = mat(2 * n_ff, n_embd)  # gate rows, then up rows
        else:
            t[p + "ffn_gate.weight"] = mat(n_ff, n_embd)
            t[p + "ffn_up.weight"] = mat(n_ff, n_embd)
        t[p + "ffn_down.weight"] = mat(n_embd, n_ff)
        if family == "gemma2":
            t[p + "post_attention_norm.weight"] = norm(n_embd)
            t[p + "post_ffw_norm.weight"] = norm(n_embd)
    if family == "llama3":
        t["rope_freqs.weight"] = llama3_rope_freqs(hd, 500000.0, **LLAMA3_ROPE)
    if family == "phi3":  # LongRoPE: short factors near 1, long ones growing to ~24
        k = np.arange(hd // 2) / (hd // 2 - 1)
        t["rope_factors_short.weight"] = 1.0 + 0.5 * k ** 2
        t["rope_factors_long.weight"] = 1.0 + 23.0 * k ** 1.5
    return {k: v.astype(np.float32) for k, v in t.items()}


def family_vocab(family: str) -> dict:
    import tiny_vocab

    kind = _FAMILY[family][1]
    if kind == "llama3":
        return tiny_vocab.llama3_gguf_vocab()
    return tiny_vocab.spm_gguf_vocab("gemma" if kind == "spm-gemma" else "llama")


def _add_kv(w, key: str, val) -> None:
    if isinstance(val, bool):
        w.add_bool(key, val)
    elif isinstance(val, (int, np.integer)):
        w.add_uint32(key, int(val))
    elif isinstance(val, (float, np.floating)):
        w.add_float32(key, float(val))
    elif isinstance(val, str):
        w.add_string(key, val)
    elif isinstance(val, np.ndarray) and val.dtype.kind == "f":
        w.add_array(key, [float(x) for x in val])
    elif isinstance(val, np.ndarray):
        w.add_array(key, [int(x) for x in val])
    else:
        w.add_array(key, list(val))


def write_tiny_family(path, family: str, weight_type: str = "F32", skip_tensors=(),
                      tensor_overrides=None, **kv) -> str:
    """Write a tiny model of `family` (FAMILIES) to `path`. kv: '<arch>.<key>' suffixes."""
    arch, _vocab, (n_embd, n_head, n_head_kv, _hd, n_ff, n_layer), meta = _FAMILY[family]
    meta = {"embedding_length": n_embd, "block_count": n_layer, "feed_forward_length": n_ff,
            "attention.head_count": n_head, "attention.head_count_kv": n_head_kv, **meta, **kv}
    vocab = family_vocab(family)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{family}")
    for key, val in meta.items():
        if val is not None:
            _add_kv(w, f"{arch}.{key}", val)
    for key, val in vocab.items():
        _add_kv(w, key, val)
    tensors = family_tensors(family, len(vocab["tokenizer.ggml.tokens"]))
    tensors.update(tensor_overrides or {})
    _write_tensors(w, tensors, skip_tensors, weight_type)
    return str(path)
