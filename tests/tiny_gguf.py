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
                      tensor_overrides=None, chat_template: str | None = None, **kv) -> str:
    """Write a tiny model of `family` (FAMILIES) to `path`. kv: '<arch>.<key>' suffixes;
    chat_template: a tokenizer.chat_template to store (default none)."""
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
    if chat_template is not None:
        w.add_chat_template(chat_template)
    tensors = family_tensors(family, len(vocab["tokenizer.ggml.tokens"]))
    tensors.update(tensor_overrides or {})
    _write_tensors(w, tensors, skip_tensors, weight_type)
    return str(path)


# ---- other families: qwen2, qwen3, qwen3moe, gpt-oss ------------------------------------------

N_EXPERT, N_EXPERT_USED, N_FF_EXP = 4, 2, 32
FAMILY_ARCHS = ("qwen2", "qwen3", "qwen3moe", "gpt-oss")
MOE_ARCHS = ("qwen3moe", "gpt-oss")


# Special tokens after the 256 byte tokens: (text, GGUF token type) - 3 control, 4 user-defined.
FAMILY_SPECIALS = {
    "qwen": [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<think>", 4), ("</think>", 4)],
    "gpt-oss": [("<|startoftext|>", 3), ("<|endoftext|>", 3), ("<|start|>", 3), ("<|channel|>", 3),
                ("<|message|>", 3), ("<|end|>", 3), ("<|return|>", 3), ("<|call|>", 3), ("<|constrain|>", 3)],
}


# The families' own pre-tokenizers as their Hugging Face tokenizer.json files define them (the
# split regex verbatim, then byte-level without GPT-2's regex; Qwen2 normalises to NFC first).
HF_SPLIT_REGEX = {
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "gpt-4o": r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}


def family_pre(arch: str) -> str:
    return "gpt-4o" if arch == "gpt-oss" else "qwen2"


def hf_reference_tokenizer(pre: str, tokens: list[str], merges: list[str]):
    """A `tokenizers.Tokenizer` over (tokens, merges) with the family's HF pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HF_SPLIT_REGEX[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
    return tok


def arch_vocab(arch: str, n_merges: int = 200) -> tuple[list[str], list[int], list[str]]:
    """(tokens, types, merges): a byte-level BPE trained with the `tokenizers` library on the
    tokenizer corpus through the family's HF pre-tokenizer (256 byte tokens + n_merges merges),
    then the family's special tokens, padded with unused tokens to a multiple of 32."""
    import json

    from data.tokenizer_corpus import CORPUS
    from tokenizers import models, pre_tokenizers, trainers, Tokenizer

    tok = hf_reference_tokenizer(family_pre(arch), [], [])
    tok.model = models.BPE()
    trainer = trainers.BpeTrainer(vocab_size=256 + n_merges, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    specials = FAMILY_SPECIALS["gpt-oss" if arch == "gpt-oss" else "qwen"]
    types = [1] * len(tokens) + [ty for _, ty in specials]
    tokens += [t for t, _ in specials]
    while len(tokens) % 32:
        tokens.append(f"<|reserved_{len(tokens)}|>")
        types.append(5)  # unused
    return tokens, types, merges


def tiny_family_tensors(arch: str, n_vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> float32 array in numpy order (ggml ne reversed) for one of FAMILY_ARCHS."""
    rng = np.random.default_rng(seed)
    hd = N_EMBD // N_HEAD

    def mat(n_out, n_in, gain=1.0, *lead):
        return gain * rng.standard_normal((*lead, n_out, n_in)) / np.sqrt(n_in)

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    t = {"token_embd.weight": rng.standard_normal((n_vocab, N_EMBD)), "output_norm.weight": norm(N_EMBD)}
    if arch == "gpt-oss":
        t["output.weight"] = mat(n_vocab, N_EMBD)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = norm(N_EMBD)
        t[p + "attn_q.weight"] = mat(N_HEAD * hd, N_EMBD)
        t[p + "attn_k.weight"] = mat(N_HEAD_KV * hd, N_EMBD)
        t[p + "attn_v.weight"] = mat(N_HEAD_KV * hd, N_EMBD)
        t[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * hd)
        if arch in ("qwen2", "gpt-oss"):
            t[p + "attn_q.bias"] = 0.5 * rng.standard_normal(N_HEAD * hd)
            t[p + "attn_k.bias"] = 0.5 * rng.standard_normal(N_HEAD_KV * hd)
            t[p + "attn_v.bias"] = 0.5 * rng.standard_normal(N_HEAD_KV * hd)
        if arch in ("qwen3", "qwen3moe"):
            t[p + "attn_q_norm.weight"] = norm(hd)
            t[p + "attn_k_norm.weight"] = norm(hd)
        if arch == "gpt-oss":
            t[p + "attn_output.bias"] = 0.5 * rng.standard_normal(N_EMBD)
            t[p + "attn_sinks.weight"] = rng.standard_normal(N_HEAD)
            t[p + "post_attention_norm.weight"] = norm(N_EMBD)
        else:
            t[p + "ffn_norm.weight"] = norm(N_EMBD)
        if arch in MOE_ARCHS:
            t[p + "ffn_gate_inp.weight"] = mat(N_EXPERT, N_EMBD, 3.0)
            # gpt-oss: large gate/up so that its SwiGLU clamp (limit 7) is reached
            g = 4.0 if arch == "gpt-oss" else 1.0
            t[p + "ffn_gate_exps.weight"] = mat(N_FF_EXP, N_EMBD, g, N_EXPERT)
            t[p + "ffn_up_exps.weight"] = mat(N_FF_EXP, N_EMBD, g, N_EXPERT)
            t[p + "ffn_down_exps.weight"] = mat(N_EMBD, N_FF_EXP, 1.0, N_EXPERT)
            if arch == "gpt-oss":
                t[p + "ffn_gate_inp.bias"] = 0.5 * rng.standard_normal(N_EXPERT)
                t[p + "ffn_gate_exps.bias"] = 0.5 * rng.standard_normal((N_EXPERT, N_FF_EXP))
                t[p + "ffn_up_exps.bias"] = 0.5 * rng.standard_normal((N_EXPERT, N_FF_EXP))
                t[p + "ffn_down_exps.bias"] = 0.5 * rng.standard_normal((N_EXPERT, N_EMBD))
        else:
            t[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD)
            t[p + "ffn_up.weight"] = mat(N_FF, N_EMBD)
            t[p + "ffn_down.weight"] = mat(N_EMBD, N_FF)
    return {k: v.astype(np.float32) for k, v in t.items()}


def _family_meta(arch: str) -> dict:
    meta = {
        "context_length": 4096,
        "embedding_length": N_EMBD,
        "block_count": N_LAYER,
        "feed_forward_length": N_FF,
        "attention.head_count": N_HEAD,
        "attention.head_count_kv": N_HEAD_KV,
        "attention.layer_norm_rms_epsilon": 1e-6,
        "rope.freq_base": 1000000.0,
    }
    if arch in MOE_ARCHS:
        meta.update({"expert_count": N_EXPERT, "expert_used_count": N_EXPERT_USED,
                     "expert_feed_forward_length": N_FF_EXP})
    if arch == "gpt-oss":
        # gpt-oss-20b's settings, scaled: YaRN x32 from 4096, window 128 -> 4 (tests see it)
        meta.update({"context_length": 131072, "attention.layer_norm_rms_epsilon": 1e-5,
                     "rope.freq_base": 150000.0, "attention.sliding_window": 4,
                     "rope.scaling.type": "yarn", "rope.scaling.factor": 32.0,
                     "rope.scaling.original_context_length": 4096,
                     "attention.key_length": N_EMBD // N_HEAD, "attention.value_length": N_EMBD // N_HEAD})
    return meta


def write_tiny_arch(path, arch: str, weight_type: str = "F32", expert_type: str | None = None,
                      skip_tensors=(), tensor_overrides=None, chat_template: str | None = None,
                      **kv) -> str:
    """Write a tiny random `arch` model (one of FAMILY_ARCHS) with real tensor names and keys, and a
    byte-level vocabulary with the family's pre-tokenizer and special tokens.
    weight_type: GGML type of every weight matrix (>= 2-D; norms, biases, sinks stay F32);
    expert_type: type of the stacked expert matrices (default weight_type), e.g. MXFP4.
    kv: metadata overrides by '<arch>.' suffix (value None = drop the key); chat_template: a
    tokenizer.chat_template to store (default none)."""
    meta = _family_meta(arch)
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
    tokens, types, merges = arch_vocab(arch)
    ids = {t: i for i, t in enumerate(tokens)}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(family_pre(arch))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if arch == "gpt-oss":
        w.add_bos_token_id(ids["<|startoftext|>"])
        w.add_eos_token_id(ids["<|return|>"])
        w.add_pad_token_id(ids["<|endoftext|>"])
    else:
        w.add_eos_token_id(ids["<|im_end|>"])
        w.add_pad_token_id(ids["<|endoftext|>"])
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    tensors = tiny_family_tensors(arch, len(tokens))
    tensors.update(tensor_overrides or {})
    for name, arr in tensors.items():
        if name in skip_tensors:
            continue
        tname = expert_type if (expert_type and "_exps." in name and name.endswith(".weight")) else weight_type
        qtype = gguf.GGMLQuantizationType[tname]
        if arr.ndim >= 2 and not name.endswith(".bias") and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)
