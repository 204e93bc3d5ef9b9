"""Reference forward pass in plain numpy: the golden logits the native core is checked against.

Owns: parsing a GGUF file, dequantizing every weight once to float32 with `gguf.quants` (cached
per process and path), and one full causal pass `ReferenceModel.forward(tokens)` ->
(n_tokens, n_vocab) from position 0, for the architectures `llama`, `gemma3`, `gemma2`, `phi3`,
`qwen2`, `qwen3`, `qwen3moe` and `gpt-oss` (others raise).
Must not: use a peer engine, a KV cache or batching; it favours plain, checkable math over speed.
Two modes: float32 math (the default, the truth), and `emulate_ggml=True`, the same graph with
ggml's CPU arithmetic reproduced bit for bit (ggml_numerics.py), against which the core's logits
agree to the last matmul's summation order (tests/test_core_reference_ggml.py).
Each convention below was checked against llama-cpp-python by check_against_llama_cpp.py, which
also flips them one at a time (ablations) to show the chosen one is the one that matches.

Conventions (details at each use):
- Weights: numpy shape is ggml `ne` reversed, so a matrix (n_out, n_in) projects as `x @ W.T`.
- RMSNorm: x / sqrt(mean(x^2) + eps) * w, eps from `{arch}.attention.layer_norm_rms_epsilon`.
- RoPE: llama rotates adjacent pairs (x[2i], x[2i+1]) because the converter permuted attn_q /
  attn_k rows; gemma3 rotates halves (x[i], x[i + n_rot/2]) (NeoX). theta_i = base^(-2i/n_rot).
- GQA: query head h reads KV head h // (n_head / n_head_kv). Tied output when no output.weight.
- gemma3: norm weights already hold Gemma's (1 + w); embeddings * sqrt(n_embd); q/k RMSNorm per
  head before RoPE; post-attention / post-FFN norms; GeGLU gelu_tanh(gate) * up; layer i global
  iff (i + 1) % 6 == 0, local layers use RoPE base 10000 and see keys with i - j < window (512);
  scores scaled by 1/sqrt(key_length); softcapping / linear rope scaling only if keys say so.
- llama extras: `rope_freqs` [n_rot/2] (Llama 3.1+) divides each pair's angle; a declared
  `attention.sliding_window` (Mistral v0.1) applies to every layer.
- gemma2: as gemma3 without q/k norms; one RoPE base; layer i local iff i % pattern < pattern - 1
  (pattern 2 by default: even layers), window default 4096; scores cap * tanh(s / cap) with
  attn_logit_softcapping (default 50), logits likewise with final_logit_softcapping (default 30).
- phi3: NeoX RoPE; attn_qkv = [q; k; v] rows, ffn_up = [gate; up] rows (split at load); LongRoPE:
  angles divided by rope_factors_long when the context exceeds
  rope.scaling.original_context_length, else rope_factors_short; cos/sin times
  rope.scaling.attn_factor.
- qwen2 / qwen3 / qwen3moe: the llama block with NeoX RoPE (no row permutation in their GGUFs);
  qwen2 adds q/k/v biases; qwen3 RMSNorms each q/k head (attn_q_norm / attn_k_norm) before RoPE.
- Mixture of experts (qwen3moe, gpt-oss): router logits r = h W_r^T (+ b_r); qwen3moe takes
  p = softmax(r), the top-k of p, weights p[top-k] / sum (expert_weights_norm, default true);
  gpt-oss takes the top-k of r and weights softmax(r[top-k]). Output = sum_j w_j expert_j(h).
- gpt-oss: q/k/v/o biases; per-head sink logit s_h joins each softmax's denominator only
  (p_j = e^{a_j} / (sum_i e^{a_i} + e^{s_h})); even layers see keys with i - j < sliding_window;
  YaRN RoPE (ggml's formulation, apply_rope); experts: x = min(g, 7), y = clip(u, -7, 7),
  x * sigmoid(1.702 x) * (y + 1); the FFN's pre-norm is post_attention_norm.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from . import ggml_numerics as gn

SUPPORTED_ARCHS = ("llama", "gemma3", "gemma2", "phi3", "qwen2", "qwen3", "qwen3moe", "gpt-oss")

# Per-layer tensors each architecture uses; any other tensor (biases, rope_freqs, experts, ...)
# means a feature this reference does not implement, so loading raises instead of ignoring it.
_LAYER_TENSORS = {
    "llama": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
              "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"),
    "gemma3": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm",
               "attn_k_norm", "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up",
               "ffn_down", "post_ffw_norm"),
    "gemma2": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "post_attention_norm",
               "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"),
    "phi3": ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"),
    "qwen2": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
              "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"),
    "qwen3": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm",
              "attn_k_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"),
    "qwen3moe": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm",
                 "attn_k_norm", "ffn_norm", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps",
                 "ffn_down_exps"),
    "gpt-oss": ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_sinks",
                "post_attention_norm", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps",
                "ffn_down_exps"),
}
# Per-layer biases (`<name>.bias`): required ones, and optional ones (used when present).
_LAYER_BIASES = {
    "gpt-oss": ("attn_output", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"),
}
_LAYER_OPTIONAL_BIASES = {
    "qwen2": ("attn_q", "attn_k", "attn_v"),
    "qwen3": ("attn_q", "attn_k", "attn_v"),
    "qwen3moe": ("attn_q", "attn_k", "attn_v"),
    "gpt-oss": ("attn_q", "attn_k", "attn_v"),
}
_MOE_ARCHS = ("qwen3moe", "gpt-oss")
_GLOBAL_TENSORS = ("token_embd", "output_norm", "output")
# Optional global tensors per architecture (RoPE frequency factors).
_OPTIONAL_GLOBAL = {"llama": ("rope_freqs",), "phi3": ("rope_factors_long", "rope_factors_short")}

# Gemma 3 defaults that GGUF files (like the 270M one) do not store; from the HF configs of the
# family (`layer_types`: 5 sliding then 1 full, `rope_local_base_freq` 10000).
_GEMMA3_SWA_PATTERN = 6          # layer i is global iff (i + 1) % 6 == 0
_GEMMA3_ROPE_BASE_SWA = 10000.0  # RoPE base of the sliding-window (local) layers


# ---------------------------------------------------------------------------------------------
# structs


@dataclass(frozen=True)
class Hparams:
    """Everything the forward pass needs besides the weights. Lengths count elements/tokens."""

    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim_k: int           # elements per query/key head
    head_dim_v: int           # elements per value head
    n_rot: int                # leading elements of each head that RoPE rotates
    rms_eps: float
    rope_neox: bool           # True: rotate (x[i], x[i+n_rot/2]); False: (x[2i], x[2i+1])
    rope_base: float          # global (full-attention) layers
    rope_base_swa: float      # sliding-window layers
    rope_pos_scale: float     # position multiplier (1/factor of "linear" rope scaling), global
    rope_pos_scale_swa: float  # same for sliding-window layers
    layer_swa: tuple[bool, ...]  # per layer: True = sliding-window attention
    sliding_window: int       # tokens; key j is visible to query i iff 0 <= i - j < window
    attn_scale: float         # multiplies q.k
    embd_scale: float         # multiplies the token embedding rows
    attn_softcap: float       # 0 = off; else scores = cap * tanh(scores / cap)
    final_softcap: float      # 0 = off; else logits = cap * tanh(logits / cap)
    rope_attn_factor: float = 1.0  # multiplies cos and sin (LongRoPE)
    n_ctx_orig: int = 0       # context LongRoPE's short factors are for (0 = no LongRoPE)
    n_ctx_train: int = 0      # the file's context_length
    # YaRN: (ext_factor, attn_factor, n_ctx_orig, beta_fast, beta_slow), None = plain RoPE
    yarn: tuple | None = None
    n_expert: int = 0          # mixture of experts: 0 = dense FFN
    n_expert_used: int = 0     # top-k
    expert_weights_norm: bool = False  # renormalise the top-k softmax weights (qwen3moe)


# ---------------------------------------------------------------------------------------------
# load


_CACHE: dict[str, tuple[Hparams, dict[str, np.ndarray], dict[str, "QuantInfo"]]] = {}

# GGUF metadata value types -> struct format (8 = string, 9 = array are handled apart).
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}


def _read_gguf(path: str) -> tuple[dict, list[tuple[str, list[int], int, np.ndarray]]]:
    """Parse a GGUF v2/v3 file: ({key: value} without tokenizer.*, [(name, ne, qtype, bytes)]).

    A small own parser instead of gguf.GGUFReader, which decodes every one of Gemma's 262k
    vocabulary strings into numpy views (~9 s); here they are skipped. `bytes` is a read-only
    uint8 memmap view (n_rows, row_bytes) of each tensor, ready for gguf.quants.dequantize.
    """
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    mv = memoryview(buf)
    off = 0

    def take(fmt: str):
        nonlocal off
        v = struct.unpack_from(fmt, mv, off)[0]
        off += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal off
        n = take("<Q")
        off += n
        return bytes(mv[off - n:off]).decode("utf-8")

    def value(vtype: int, keep: bool):
        nonlocal off
        if vtype in _GGUF_SCALARS:
            return take(_GGUF_SCALARS[vtype])
        if vtype == 8:
            return string()
        if vtype != 9:
            raise ValueError(f"{path}: unknown GGUF value type {vtype}")
        sub, n = take("<I"), take("<Q")
        if sub in _GGUF_SCALARS and not keep:
            off += n * struct.calcsize(_GGUF_SCALARS[sub])  # skipped wholesale
            return None
        return [value(sub, keep) for _ in range(n)]

    if bytes(mv[:4]) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    off = 4
    version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} is not supported")
    fields = {}
    for _ in range(n_kv):
        key = string()
        keep = not key.startswith("tokenizer.")
        v = value(take("<I"), keep)
        if keep:
            fields[key] = v
    infos = []
    for _ in range(n_tensors):
        name = string()
        ne = [take("<Q") for _ in range(take("<I"))]  # ggml order: ne[0] is the fastest axis
        qtype, rel = take("<I"), take("<Q")
        infos.append((name, ne, qtype, rel))
    align = int(fields.get("general.alignment", 32))
    data_start = (off + align - 1) // align * align
    tensors = []
    for name, ne, qtype, rel in infos:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        row_bytes = ne[0] // block * type_size
        n_rows = int(np.prod(ne[1:], dtype=np.int64))
        start = data_start + rel
        raw = buf[start:start + n_rows * row_bytes].reshape(n_rows, row_bytes)
        tensors.append((name, ne, qtype, raw))
    return fields, tensors


def _field(fields: dict, key: str, default=KeyError):
    """Value of a metadata key; `default` if absent (KeyError if no default is given)."""
    if key not in fields:
        if default is KeyError:
            raise KeyError(f"GGUF metadata key {key!r} is missing")
        return default
    return fields[key]


def _load_weights(tensors) -> dict[str, np.ndarray]:
    """name -> float32 array, numpy shape = reversed ggml ne (a matrix is (n_out, n_in))."""
    out = {}
    for name, ne, qtype, raw in tensors:
        w = dequantize(raw, GGMLQuantizationType(qtype))  # (n_rows, ne[0])
        out[name] = np.ascontiguousarray(w, dtype=np.float32).reshape(tuple(reversed(ne)))
    return out


@dataclass(frozen=True)
class QuantInfo:
    """How a weight is stored, for the ggml emulation: its GGML type and its raw GGUF rows
    (n_rows, row_bytes) uint8 (a read-only memmap view)."""

    qtype: GGMLQuantizationType
    raw: np.ndarray


def _quant_info(tensors) -> dict[str, QuantInfo]:
    return {name: QuantInfo(GGMLQuantizationType(qtype), raw) for name, _ne, qtype, raw in tensors}


def _check_tensor_names(arch: str, n_layer: int, weights: dict[str, np.ndarray]) -> None:
    expected = {f"{n}.weight" for n in _GLOBAL_TENSORS + _OPTIONAL_GLOBAL.get(arch, ())}
    optional = {f"{n}.weight" for n in ("output",) + _OPTIONAL_GLOBAL.get(arch, ())}
    for il in range(n_layer):
        expected |= {f"blk.{il}.{n}.weight" for n in _LAYER_TENSORS[arch]}
        expected |= {f"blk.{il}.{n}.bias" for n in _LAYER_BIASES.get(arch, ())}
        optional |= {f"blk.{il}.{n}.bias" for n in _LAYER_OPTIONAL_BIASES.get(arch, ())}
    unknown = sorted(set(weights) - expected - optional)
    if unknown:
        raise NotImplementedError(f"{arch}: tensors this reference does not implement: "
                                  f"{unknown[:8]}")
    missing = sorted(expected - set(weights) - optional)
    if missing:
        raise ValueError(f"{arch}: missing tensors: {missing[:8]}")


def _rope_scaling(fields, arch: str) -> float:
    """Position multiplier from `{arch}.rope.scaling.*`: 1 for none, 1/factor for linear."""
    kind = _field(fields, f"{arch}.rope.scaling.type", "none")
    factor = float(_field(fields, f"{arch}.rope.scaling.factor", 1.0))
    if kind in ("none", "llama3", "longrope") or factor in (0.0, 1.0):
        return 1.0  # llama3 / LongRoPE scale through factor tensors, not the position
    if kind in ("linear", "yarn"):  # yarn: also the interpolation factor (see apply_rope)
        return 1.0 / factor
    raise NotImplementedError(f"rope scaling type {kind!r} is not implemented")


def _hparams(fields, weights: dict[str, np.ndarray]) -> Hparams:
    arch = _field(fields, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise NotImplementedError(f"architecture {arch!r} is not supported ({SUPPORTED_ARCHS})")
    a = arch + "."
    if arch in FAMILY_ARCHS:
        return _hparams_family(fields, weights)
    if _field(fields, a + "expert_count", 0):
        raise NotImplementedError("mixture-of-experts models are not supported")
    n_layer = int(_field(fields, a + "block_count"))
    n_embd = int(_field(fields, a + "embedding_length"))
    n_head = int(_field(fields, a + "attention.head_count"))
    n_head_kv = _field(fields, a + "attention.head_count_kv", n_head)
    if not isinstance(n_head_kv, int):
        raise NotImplementedError("per-layer head_count_kv is not supported")
    head_dim_k = int(_field(fields, a + "attention.key_length", n_embd // n_head))
    head_dim_v = int(_field(fields, a + "attention.value_length", head_dim_k))
    n_rot = int(_field(fields, a + "rope.dimension_count", head_dim_k))
    n_vocab = weights["token_embd.weight"].shape[0]
    eps = float(_field(fields, a + "attention.layer_norm_rms_epsilon"))
    pos_scale = _rope_scaling(fields, arch)
    if arch in ("gemma2", "phi3"):
        return _hparams_gemma2_phi3(fields, arch, n_layer, n_embd, n_vocab, n_head, n_head_kv,
                                    head_dim_k, head_dim_v, n_rot, eps, pos_scale)
    if arch == "llama":
        base = float(_field(fields, a + "rope.freq_base", 10000.0))
        window = int(_field(fields, a + "attention.sliding_window", 0))
        return Hparams(
            arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab, n_head=n_head,
            n_head_kv=n_head_kv, head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_rot=n_rot,
            rms_eps=eps,
            # The HF->GGUF converter permutes the rows of attn_q / attn_k inside each head
            # (HF half i -> rows 2i / 2i+1) so that adjacent-pair RoPE on the stored layout equals
            # HF's rotate_half on the original one. Verified: NeoX here breaks agreement.
            rope_neox=False,
            rope_base=base, rope_base_swa=base, rope_pos_scale=pos_scale,
            rope_pos_scale_swa=pos_scale, layer_swa=(window > 0,) * n_layer,
            sliding_window=window,
            attn_scale=1.0 / math.sqrt(head_dim_k), embd_scale=1.0, attn_softcap=0.0,
            final_softcap=0.0,
            n_ctx_train=int(_field(fields, a + "context_length", 4096)),
        )
    # gemma3
    window = int(_field(fields, a + "attention.sliding_window", 0))
    pattern = _field(fields, a + "attention.sliding_window_pattern", _GEMMA3_SWA_PATTERN)
    if window <= 0:
        layer_swa = (False,) * n_layer  # no window in the file: every layer is global
    elif isinstance(pattern, list):
        layer_swa = tuple(bool(b) for b in pattern)  # explicit per-layer flags, True = local
    else:
        # HF `layer_types`: 5 x sliding_attention then full_attention, repeated; so layer i is
        # global iff (i + 1) % 6 == 0 (layers 5, 11, 17 of the 270M's 18).
        layer_swa = tuple((il + 1) % int(pattern) != 0 for il in range(n_layer))
    # Gemma's query_pre_attn_scalar is head_dim (256) for every size but 27B, where it is
    # n_embd / n_head; it is not stored in GGUF, so derive it the same way.
    is_27b = n_layer == 62  # GGUF has no size key; 62 layers is gemma-3-27b
    qpas = n_embd / n_head if is_27b else head_dim_k
    return Hparams(
        arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab, n_head=n_head,
        n_head_kv=n_head_kv, head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_rot=n_rot,
        rms_eps=eps,
        rope_neox=True,  # Gemma keeps HF's rotate_half layout (no row permutation in GGUF)
        rope_base=float(_field(fields, a + "rope.freq_base", 1_000_000.0)),
        rope_base_swa=float(_field(fields, a + "rope.freq_base_swa", _GEMMA3_ROPE_BASE_SWA)),
        # Linear rope scaling (Gemma 3 4B+) applies to the global layers only.
        rope_pos_scale=pos_scale, rope_pos_scale_swa=1.0,
        layer_swa=layer_swa, sliding_window=window,
        attn_scale=1.0 / math.sqrt(qpas),
        # Embedding rows are multiplied by sqrt(n_embd) in float32 (HF rounds this factor to
        # the activation dtype, e.g. bf16 25.25 instead of 25.298; llama.cpp uses the float).
        embd_scale=float(np.sqrt(np.float32(n_embd))),
        attn_softcap=float(_field(fields, a + "attn_logit_softcapping", 0.0)),
        final_softcap=float(_field(fields, a + "final_logit_softcapping", 0.0)),
    )


def _hparams_gemma2_phi3(fields, arch, n_layer, n_embd, n_vocab, n_head, n_head_kv, head_dim_k,
                         head_dim_v, n_rot, eps, pos_scale) -> Hparams:
    a = arch + "."
    base = float(_field(fields, a + "rope.freq_base", 10000.0))
    common = dict(arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab, n_head=n_head,
                  n_head_kv=n_head_kv, head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_rot=n_rot,
                  rms_eps=eps, rope_neox=True, rope_base=base, rope_pos_scale=pos_scale,
                  rope_pos_scale_swa=pos_scale)
    if arch == "phi3":
        n_ctx_train = int(_field(fields, a + "context_length", 4096))
        return Hparams(
            **common, rope_base_swa=base, layer_swa=(False,) * n_layer, sliding_window=0,
            attn_scale=1.0 / math.sqrt(head_dim_k), embd_scale=1.0, attn_softcap=0.0,
            final_softcap=0.0,
            rope_attn_factor=float(_field(fields, a + "rope.scaling.attn_factor", 1.0)),
            n_ctx_orig=int(_field(fields, a + "rope.scaling.original_context_length",
                                  n_ctx_train)),
            n_ctx_train=n_ctx_train)
    # gemma2: HF `is_sliding = not bool(layer_idx % 2)`, generalised by the pattern key
    period = int(_field(fields, a + "attention.sliding_window_pattern", 2))
    is_27b = n_layer == 46  # gemma-2-27b: query_pre_attn_scalar = n_embd / n_head
    return Hparams(
        **common,
        rope_base_swa=float(_field(fields, a + "rope.freq_base_swa", base)),
        layer_swa=tuple(il % period < period - 1 for il in range(n_layer)),
        sliding_window=int(_field(fields, a + "attention.sliding_window", 4096)),
        attn_scale=1.0 / math.sqrt(n_embd // n_head if is_27b else head_dim_k),
        embd_scale=float(np.sqrt(np.float32(n_embd))),
        attn_softcap=float(_field(fields, a + "attn_logit_softcapping", 50.0)),
        final_softcap=float(_field(fields, a + "final_logit_softcapping", 30.0)),
        n_ctx_train=int(_field(fields, a + "context_length", 8192)))


def _split_fused(hp: Hparams, weights: dict[str, np.ndarray], quant: dict) -> None:
    """phi3: attn_qkv -> attn_q/k/v and ffn_up -> ffn_gate/up, by rows (in place; the raw rows of
    a quantized weight split the same way, so the ggml emulation sees the same blocks)."""
    q_dim = hp.n_head * hp.head_dim_k
    k_dim = hp.n_head_kv * hp.head_dim_k
    for il in range(hp.n_layer):
        p = f"blk.{il}."
        parts = {"attn_qkv": [("attn_q", 0, q_dim), ("attn_k", q_dim, q_dim + k_dim),
                              ("attn_v", q_dim + k_dim, None)]}
        if p + "ffn_gate.weight" not in weights:
            n_ff = weights[p + "ffn_up.weight"].shape[0] // 2
            parts["ffn_up"] = [("ffn_gate", 0, n_ff), ("ffn_up", n_ff, None)]
        for fused, pieces in parts.items():
            key = p + fused + ".weight"
            if key not in weights:
                continue
            w, info = weights.pop(key), quant.pop(key)
            for name, a, b in pieces:
                weights[p + name + ".weight"] = w[a:b]
                quant[p + name + ".weight"] = QuantInfo(info.qtype, info.raw[a:b])
FAMILY_ARCHS = ("qwen2", "qwen3", "qwen3moe", "gpt-oss")


def _yarn(fields, arch: str, n_ctx_train: int):
    """llama.cpp's YaRN set-up from `{arch}.rope.scaling.*`, or None when the type is not yarn:
    ext_factor 1, beta_fast 32, beta_slow 1; attn_factor = mscale / (1 + 0.1 ln f) with
    mscale = 1 + 0.1 ln f, because ggml multiplies cos/sin by (1 + 0.1 ln f) itself."""
    a = arch + "."
    if _field(fields, a + "rope.scaling.type", "none") != "yarn":
        return None
    factor = float(_field(fields, a + "rope.scaling.factor", 0.0))
    attn = 1.0
    if factor > 1.0:
        attn = (0.1 * math.log(factor) + 1.0) / (1.0 + 0.1 * math.log(factor))
        attn *= float(_field(fields, a + "rope.scaling.attn_factor", 1.0))
    n_orig = int(_field(fields, a + "rope.scaling.original_context_length", n_ctx_train))
    return (1.0, attn, n_orig, 32.0, 1.0)


def _hparams_family(fields, weights: dict[str, np.ndarray]) -> Hparams:
    """qwen2, qwen3, qwen3moe, gpt-oss: llama.cpp's defaults where a key is absent."""
    arch = _field(fields, "general.architecture")
    a = arch + "."
    n_layer = int(_field(fields, a + "block_count"))
    n_embd = int(_field(fields, a + "embedding_length"))
    n_head = int(_field(fields, a + "attention.head_count"))
    n_head_kv = int(_field(fields, a + "attention.head_count_kv", n_head))
    head_dim_k = int(_field(fields, a + "attention.key_length", n_embd // n_head))
    head_dim_v = int(_field(fields, a + "attention.value_length", head_dim_k))
    n_rot = int(_field(fields, a + "rope.dimension_count", head_dim_k))
    n_ctx_train = int(_field(fields, a + "context_length", 4096))
    pos_scale = _rope_scaling(fields, arch)
    base = float(_field(fields, a + "rope.freq_base", 10000.0))
    window, layer_swa = 0, (False,) * n_layer
    if arch == "gpt-oss":  # even layers sliding (llama.cpp: il % pattern < pattern - 1)
        window = int(_field(fields, a + "attention.sliding_window"))
        pattern = int(_field(fields, a + "attention.sliding_window_pattern", 2))
        layer_swa = tuple(pattern == 0 or il % pattern < pattern - 1 for il in range(n_layer))
    moe = arch in _MOE_ARCHS
    return Hparams(
        arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=weights["token_embd.weight"].shape[0],
        n_head=n_head, n_head_kv=n_head_kv, head_dim_k=head_dim_k, head_dim_v=head_dim_v,
        n_rot=n_rot, rms_eps=float(_field(fields, a + "attention.layer_norm_rms_epsilon")),
        rope_neox=True, rope_base=base,
        rope_base_swa=float(_field(fields, a + "rope.freq_base_swa", base)),
        rope_pos_scale=pos_scale, rope_pos_scale_swa=pos_scale,
        layer_swa=layer_swa, sliding_window=window, attn_scale=1.0 / math.sqrt(head_dim_k),
        embd_scale=1.0, attn_softcap=0.0, final_softcap=0.0,
        yarn=_yarn(fields, arch, n_ctx_train),
        n_expert=int(_field(fields, a + "expert_count")) if moe else 0,
        n_expert_used=int(_field(fields, a + "expert_used_count")) if moe else 0,
        expert_weights_norm=(arch == "qwen3moe"
                             and bool(_field(fields, a + "expert_weights_norm", True))),
    )


def _load_cached(gguf_path: str | Path):
    key = str(Path(gguf_path).resolve())
    if key not in _CACHE:
        fields, tensors = _read_gguf(key)
        arch = _field(fields, "general.architecture")
        if arch not in SUPPORTED_ARCHS:  # before the (slow) dequantization
            raise NotImplementedError(f"architecture {arch!r} is not supported {SUPPORTED_ARCHS}")
        weights = _load_weights(tensors)
        hp = _hparams(fields, weights)
        _check_tensor_names(hp.arch, hp.n_layer, weights)
        quant = _quant_info(tensors)
        if hp.arch == "phi3":
            _split_fused(hp, weights, quant)
        _CACHE[key] = (hp, weights, quant)
    return _CACHE[key]


def load(gguf_path: str | Path) -> tuple[Hparams, dict[str, np.ndarray]]:
    """(hparams, float32 weights) of a GGUF file, dequantized once per process and path.
    The arrays are shared between ReferenceModel instances: never modify them in place."""
    hp, weights, _ = _load_cached(gguf_path)
    return hp, weights


# ---------------------------------------------------------------------------------------------
# math


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """Normalize over the last axis: x / sqrt(mean(x^2) + eps) * w (sum of squares in float64)."""
    ms = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    return (x / np.sqrt(ms + eps)).astype(np.float32) * w


def apply_rope(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, pos_scale: float,
               neox: bool, factors: np.ndarray | None = None, attn_factor: float = 1.0,
               yarn: tuple | None = None) -> np.ndarray:
    """Rotate x (n_tokens, n_heads, head_dim) by position; only the first n_rot elements.

    Pair k (k < n_rot/2) turns by angle pos * pos_scale * base^(-2k/n_rot) / factors[k]
    (factors: RoPE frequency factors, default 1); cos and sin are multiplied by attn_factor.
    The pair is (x[k], x[k + n_rot/2]) when neox else (x[2k], x[2k+1]).
    yarn = (ext_factor, attn_factor, n_ctx_orig, beta_fast, beta_slow), ggml's YaRN: pair k turns
    by theta_i (1 - m_k) + theta_e m_k, theta_e = pos base^(-2k/n_rot), theta_i = pos_scale
    theta_e, m_k = ext_factor (1 - clip((k - lo) / max(0.001, hi - lo), 0, 1)) with lo/hi the
    floor/ceil of the dims whose wavelength fits beta_fast/beta_slow turns in n_ctx_orig; and
    cos/sin are scaled by attn_factor (1 + 0.1 ln(1/pos_scale)).
    """
    half = n_rot // 2
    inv_freq = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)  # (half,)
    if factors is not None:
        inv_freq = inv_freq / factors.astype(np.float64)
    ang = (pos.astype(np.float64) * pos_scale)[:, None] * inv_freq[None, :]  # (n_tokens, half)
    mscale = attn_factor
    if yarn is not None and yarn[0] != 0.0:
        ext, attn, n_orig, beta_fast, beta_slow = yarn

        def corr_dim(n_turns):
            return n_rot * math.log(n_orig / (n_turns * 2 * math.pi)) / (2 * math.log(base))

        lo = max(0.0, math.floor(corr_dim(beta_fast)))
        hi = min(n_rot - 1.0, math.ceil(corr_dim(beta_slow)))
        ramp = 1.0 - np.clip((np.arange(half) - lo) / max(0.001, hi - lo), 0.0, 1.0)  # (half,)
        mix = ramp * ext
        extrap = ang / pos_scale  # the angles without interpolation
        ang = ang * (1.0 - mix) + extrap * mix
        mscale *= attn * (1.0 + 0.1 * math.log(1.0 / pos_scale))
    cos = (mscale * np.cos(ang)).astype(np.float32)[:, None, :]  # (n_tokens, 1, half)
    sin = (mscale * np.sin(ang)).astype(np.float32)[:, None, :]
    lo, hi = (slice(0, half), slice(half, n_rot)) if neox else (slice(0, n_rot, 2),
                                                                 slice(1, n_rot, 2))
    x0, x1 = x[..., lo], x[..., hi]  # (n_tokens, n_heads, half) each
    out = x.copy()
    out[..., lo] = x0 * cos - x1 * sin
    out[..., hi] = x0 * sin + x1 * cos
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (HF `gelu_pytorch_tanh`)."""
    c = np.float32(math.sqrt(2.0 / math.pi))
    inner = c * (x + np.float32(0.044715) * x ** 3)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), with sigmoid(x) = (1 + tanh(x/2)) / 2 (no overflow for large |x|)."""
    return x * (np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x)))


def causal_mask(n_tokens: int, window: int) -> np.ndarray:
    """(n_tokens, n_tokens) bool, True where query i may see key j: j <= i, and i - j < window
    when window > 0 (so a key exactly `window` positions back is already masked)."""
    i = np.arange(n_tokens)[:, None]
    j = np.arange(n_tokens)[None, :]
    ok = j <= i
    if window > 0:
        ok &= (i - j) < window
    return ok


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: np.ndarray,
           softcap: float, sinks: np.ndarray | None = None) -> np.ndarray:
    """Softmax attention with grouped KV heads.

    q (n_tokens, n_head, hd_k), k (n_tokens, n_head_kv, hd_k), v (n_tokens, n_head_kv, hd_v)
    -> (n_tokens, n_head * hd_v). Query head h reads KV head h // (n_head / n_head_kv).
    sinks (n_head,): an extra logit per head in the softmax's denominator, attending to nothing.
    """
    n_tokens, n_head, _ = q.shape
    group = n_head // k.shape[1]
    qh = q.transpose(1, 0, 2)  # (n_head, n_tokens, hd_k)
    kh = np.repeat(k.transpose(1, 0, 2), group, axis=0)  # (n_head, n_tokens, hd_k)
    vh = np.repeat(v.transpose(1, 0, 2), group, axis=0)  # (n_head, n_tokens, hd_v)
    s = (qh @ kh.transpose(0, 2, 1)) * np.float32(scale)  # (n_head, n_tokens, n_tokens)
    if softcap > 0:
        s = np.float32(softcap) * np.tanh(s / np.float32(softcap))
    s = np.where(mask[None], s, -np.inf)
    smax = s.max(axis=-1, keepdims=True)  # (n_head, n_tokens, 1)
    sink = None
    if sinks is not None:
        sink = sinks.astype(np.float32)[:, None, None]  # (n_head, 1, 1)
        smax = np.maximum(smax, sink)
    p = np.exp(s - smax)
    denom = p.sum(axis=-1, keepdims=True)
    if sink is not None:
        denom = denom + np.exp(sink - smax)
    p /= denom
    o = p @ vh  # (n_head, n_tokens, hd_v)
    return o.transpose(1, 0, 2).reshape(n_tokens, -1)


# ---------------------------------------------------------------------------------------------
# forward

# ggml emulation: integer weights decoded from the raw blocks, per (path, tensor name)
_DECODED: dict[tuple[str, str], dict] = {}


class ReferenceModel:
    """Float32 numpy forward pass over a GGUF model's dequantized weights.

    emulate_ggml=False (default): plain float32 math, the truth the core is measured against.
    emulate_ggml=True: the same graph computed the way ggml's CPU backend computes it, bit for
    bit up to the vocabulary projection (ggml_numerics.py): 8-bit activations and SIMD
    summation order in every quantized matmul, f16 KV cache and attention accumulator, f16 GELU
    table, float32 RoPE angles, libm calls. Then the core's logits differ from this reference
    only by the summation order of the last matmul (~1e-5), and any graph difference shows.
    flash_attn picks which of the core's attention paths is emulated; first_kv_cell is the KV
    cell holding position 0 (the softmax(KQ)V path's summation order follows the cell index;
    flash attention only needs the cells in position order).
    """

    def __init__(self, gguf_path: str | Path, emulate_ggml: bool = False, flash_attn: bool = True,
                 first_kv_cell: int = 0, n_ctx: int | None = None):
        self.path = str(gguf_path)
        self.hparams, self.weights, self.quant = _load_cached(gguf_path)
        # RoPE frequency factors: rope_freqs, else LongRoPE's long ones when the context (n_ctx,
        # default the file's context_length, as llama.cpp's n_ctx=0) exceeds the original one
        hp = self.hparams
        self.n_ctx = hp.n_ctx_train if n_ctx is None else int(n_ctx)
        w = self.weights
        self.rope_factors = w.get("rope_freqs.weight")
        if self.rope_factors is None and "rope_factors_long.weight" in w:
            long = self.n_ctx > hp.n_ctx_orig
            self.rope_factors = w["rope_factors_long.weight" if long else "rope_factors_short.weight"]
        # Tied output: with no output.weight the token embedding (n_vocab, n_embd) is reused.
        self.output_name = "output.weight" if "output.weight" in self.weights else "token_embd.weight"
        self.output = self.weights[self.output_name]
        self.emulate_ggml = bool(emulate_ggml)
        self.flash_attn = bool(flash_attn)
        self.first_kv_cell = int(first_kv_cell)
        if self.emulate_ggml and self.hparams.arch in FAMILY_ARCHS:
            raise NotImplementedError(f"ggml emulation of {self.hparams.arch} is not implemented")
        if self.emulate_ggml:
            matrices = [n for n, w in self.weights.items()
                        if w.ndim == 2 and n != "token_embd.weight"] + [self.output_name]
            uncovered = sorted({self.quant[n].qtype.name for n in matrices
                                if self.quant[n].qtype not in gn.SUPPORTED_WEIGHT_TYPES})
            if uncovered:
                raise NotImplementedError(f"ggml emulation: weight types {uncovered} are not "
                                          f"covered ({[t.name for t in gn.SUPPORTED_WEIGHT_TYPES]})")
            if self.rope_factors is not None or hp.rope_attn_factor != 1.0:
                raise NotImplementedError("ggml emulation: RoPE frequency factors are not covered")

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    def forward(self, tokens: list[int], embd: np.ndarray | None = None, blocks=()) -> np.ndarray:
        """Logits (n_tokens, n_vocab) float32 for tokens at positions 0..n_tokens-1 (causal).
        Entries whose token is -1 take the next row of `embd` (n_rows, n_embd) as their input,
        unscaled (image embeddings); `blocks`: (start, end) spans whose entries see each other."""
        hp = self.hparams
        tok = np.asarray(tokens, dtype=np.int64)
        if tok.ndim != 1 or tok.size == 0:
            raise ValueError("tokens must be a non-empty list of ints")
        if (tok.min() < 0 and embd is None) or tok.min() < -1 or tok.max() >= hp.n_vocab:
            raise ValueError(f"token id out of range [0, {hp.n_vocab})")
        pos = np.arange(tok.size)  # (n_tokens,)
        # get_rows of a quantized embedding is plain dequantization in ggml too
        x = self.weights["token_embd.weight"][np.maximum(tok, 0)] * np.float32(hp.embd_scale)  # (n_tokens, n_embd)
        if embd is not None:
            x[tok < 0] = np.asarray(embd, dtype=np.float32)
        self._blocks = tuple(blocks)
        layer = {"llama": self._layer_llama, "phi3": self._layer_llama,
                 "gemma3": self._layer_gemma3, "gemma2": self._layer_gemma3,
                 "qwen2": self._layer_qwen, "qwen3": self._layer_qwen,
                 "qwen3moe": self._layer_qwen, "gpt-oss": self._layer_gpt_oss}[hp.arch]
        for il in range(hp.n_layer):
            x = layer(il, x, pos)
        x = self._norm(x, self.weights["output_norm.weight"])
        if self.emulate_ggml:  # same rounding, BLAS order: its result feeds nothing else
            info = self.quant[self.output_name]
            logits = gn.matmul_fast(x, self.output, info.raw, info.qtype)
        else:
            logits = x @ self.output.T  # (n_tokens, n_vocab)
        if hp.final_softcap > 0:
            c = np.float32(hp.final_softcap)
            logits = c * np.tanh(logits / c)
        return logits.astype(np.float32, copy=False)

    def _w(self, il: int, name: str) -> np.ndarray:
        return self.weights[f"blk.{il}.{name}.weight"]

    # The places where the two modes differ.

    def _mm(self, x: np.ndarray, il: int, name: str) -> np.ndarray:
        """x (n, n_in) times the layer weight `name` (n_out, n_in) -> (n, n_out)."""
        key = f"blk.{il}.{name}.weight"
        if not self.emulate_ggml:
            return x @ self.weights[key].T
        info = self.quant[key]
        ck = (self.path, key)
        if ck not in _DECODED:
            _DECODED[ck] = gn.decode_weight(info.raw, info.qtype)
        return gn.matmul_exact(x, _DECODED[ck], info.qtype)

    def _norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        if self.emulate_ggml:
            return gn.rms_norm(x, w, self.hparams.rms_eps)
        return rms_norm(x, w, self.hparams.rms_eps)

    def _rope(self, x: np.ndarray, pos: np.ndarray, base: float, pscale: float) -> np.ndarray:
        hp = self.hparams
        if self.emulate_ggml:  # positions are 0..n-1
            return gn.apply_rope(x, len(pos), hp.n_rot, base, pscale, hp.rope_neox)
        return apply_rope(x, pos, hp.n_rot, base, pscale, hp.rope_neox, self.rope_factors,
                          hp.rope_attn_factor, hp.yarn)

    def _attend(self, q, k, v, mask, sinks=None) -> np.ndarray:
        hp = self.hparams
        if not self.emulate_ggml:
            return attend(q, k, v, hp.attn_scale, mask, hp.attn_softcap, sinks)
        if self.flash_attn:
            return gn.attend_flash(q, k, v, hp.attn_scale, mask, hp.attn_softcap)
        if hp.attn_softcap > 0:
            raise NotImplementedError("the core's softmax(KQ)V path has no softcapping")
        cells = self.first_kv_cell + np.arange(q.shape[0])
        return gn.attend_softmax(q, k, v, hp.attn_scale, mask, cells)

    def _glu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        if self.hparams.arch in ("llama", "phi3"):
            return gn.swiglu(gate, up) if self.emulate_ggml else silu(gate) * up
        # GeGLU: gelu_tanh(gate) * up; HF `hidden_activation: gelu_pytorch_tanh`
        return gn.geglu(gate, up) if self.emulate_ggml else gelu_tanh(gate) * up

    def _self_attention(self, il: int, h: np.ndarray, pos: np.ndarray, qk_norm: bool) -> np.ndarray:
        """h (n_tokens, n_embd), already normed -> attention output (n_tokens, n_embd)."""
        hp = self.hparams
        n = h.shape[0]
        q = self._mm_b(h, il, "attn_q").reshape(n, hp.n_head, hp.head_dim_k)
        k = self._mm_b(h, il, "attn_k").reshape(n, hp.n_head_kv, hp.head_dim_k)
        v = self._mm_b(h, il, "attn_v").reshape(n, hp.n_head_kv, hp.head_dim_v)
        if qk_norm:  # Gemma 3, Qwen 3: RMSNorm of each head over head_dim, before RoPE
            q = self._norm(q, self._w(il, "attn_q_norm"))
            k = self._norm(k, self._w(il, "attn_k_norm"))
        swa = hp.layer_swa[il]
        base = hp.rope_base_swa if swa else hp.rope_base
        pscale = hp.rope_pos_scale_swa if swa else hp.rope_pos_scale
        q = self._rope(q, pos, base, pscale)
        k = self._rope(k, pos, base, pscale)
        mask = causal_mask(n, hp.sliding_window if swa else 0)  # (n_tokens, n_tokens)
        for a, b in getattr(self, "_blocks", ()):  # bidirectional spans (Gemma 3's images)
            mask[a:b, a:b] = True
        sinks = self.weights.get(f"blk.{il}.attn_sinks.weight")  # gpt-oss
        o = self._attend(q, k, v, mask, sinks)  # (n_tokens, n_head*hd_v)
        return self._mm_b(o, il, "attn_output")

    def _layer_llama(self, il: int, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Pre-norm block: x += attn(norm(x)); x += down(silu(gate(h)) * up(h)), h = norm(x)."""
        x = x + self._self_attention(il, self._norm(x, self._w(il, "attn_norm")), pos, False)
        h = self._norm(x, self._w(il, "ffn_norm"))
        g = self._glu(self._mm(h, il, "ffn_gate"), self._mm(h, il, "ffn_up"))  # (n_tokens, n_ff)
        return x + self._mm(g, il, "ffn_down")

    def _layer_gemma3(self, il: int, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Sandwich block: x += post_norm(attn(norm(x))); x += post_norm(geglu(norm(x))).

        Every Gemma norm multiplies by (1 + w); the GGUF converter stored (1 + w), so the stored
        weight is used as is. Verified: stored - 1 is bf16-exact for all 55,936 norm values
        (stored itself for 74.6%), and adding 1 again drops the cosine to llama.cpp to 0.04.
        """
        qk_norm = self.hparams.arch == "gemma3"  # Gemma 2 has no q/k norms
        a = self._self_attention(il, self._norm(x, self._w(il, "attn_norm")), pos, qk_norm)
        x = x + self._norm(a, self._w(il, "post_attention_norm"))
        h = self._norm(x, self._w(il, "ffn_norm"))
        g = self._glu(self._mm(h, il, "ffn_gate"), self._mm(h, il, "ffn_up"))  # (n_tokens, n_ff)
        f = self._mm(g, il, "ffn_down")
        return x + self._norm(f, self._w(il, "post_ffw_norm"))

    # qwen2 / qwen3 / qwen3moe / gpt-oss

    def _mm_b(self, x: np.ndarray, il: int, name: str) -> np.ndarray:
        """_mm plus the layer's `name.bias` when the file has one."""
        y = self._mm(x, il, name)
        b = self.weights.get(f"blk.{il}.{name}.bias")
        return y if b is None else y + b

    def _layer_qwen(self, il: int, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Pre-norm block as llama (NeoX RoPE, optional q/k/v biases, q/k norms for qwen3*); the
        FFN is SwiGLU, or the mixture of experts for qwen3moe."""
        qk_norm = self.hparams.arch != "qwen2"
        x = x + self._self_attention(il, self._norm(x, self._w(il, "attn_norm")), pos, qk_norm)
        h = self._norm(x, self._w(il, "ffn_norm"))
        if self.hparams.n_expert:
            return x + self._moe(il, h)
        g = silu(self._mm(h, il, "ffn_gate")) * self._mm(h, il, "ffn_up")  # (n_tokens, n_ff)
        return x + self._mm(g, il, "ffn_down")

    def _layer_gpt_oss(self, il: int, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x += attn(norm(x)) with biases and sinks; x += moe(post_attention_norm(x))."""
        x = x + self._self_attention(il, self._norm(x, self._w(il, "attn_norm")), pos, False)
        return x + self._moe(il, self._norm(x, self._w(il, "post_attention_norm")))

    def _moe(self, il: int, h: np.ndarray) -> np.ndarray:
        """h (n_tokens, n_embd) -> sum over the top-k experts of weight * expert(h)."""
        hp = self.hparams
        k = hp.n_expert_used
        r = self._mm_b(h, il, "ffn_gate_inp").astype(np.float64)  # (n_tokens, n_expert)
        if hp.arch == "gpt-oss":  # top-k of the logits, softmax over those k
            sel = np.argsort(-r, axis=1, kind="stable")[:, :k]  # (n_tokens, k)
            wsel = np.take_along_axis(r, sel, axis=1)
            wsel = np.exp(wsel - wsel.max(axis=1, keepdims=True))
            wsel /= wsel.sum(axis=1, keepdims=True)
        else:  # softmax over all experts, top-k, renormalised
            p = np.exp(r - r.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            sel = np.argsort(-p, axis=1, kind="stable")[:, :k]
            wsel = np.take_along_axis(p, sel, axis=1)
            if hp.expert_weights_norm:
                wsel /= np.maximum(wsel.sum(axis=1, keepdims=True), 6.103515625e-5)
        out = np.zeros_like(h)
        for t in range(h.shape[0]):
            for j in range(k):
                out[t] += np.float32(wsel[t, j]) * self._expert(il, int(sel[t, j]), h[t])
        return out

    def _expert(self, il: int, e: int, h: np.ndarray) -> np.ndarray:
        """One expert's gated FFN on h (n_embd,) -> (n_embd,), with expert biases if present."""
        def proj(name, x):
            y = self.weights[f"blk.{il}.{name}.weight"][e] @ x
            b = self.weights.get(f"blk.{il}.{name}.bias")
            return y if b is None else y + b[e]

        g, u = proj("ffn_gate_exps", h), proj("ffn_up_exps", h)  # (n_ff_exp,)
        if self.hparams.arch == "gpt-oss":
            a = swiglu_oai(g, u)
        else:
            a = silu(g) * u
        return proj("ffn_down_exps", a)


def swiglu_oai(gate: np.ndarray, up: np.ndarray, alpha: float = 1.702, limit: float = 7.0):
    """gpt-oss' clamped SwiGLU: x = min(gate, limit), y = clip(up, -limit, limit);
    x * sigmoid(alpha x) * (y + 1)."""
    x = np.minimum(gate, np.float32(limit))
    y = np.clip(up, -np.float32(limit), np.float32(limit))
    return x / (np.float32(1.0) + np.exp(-np.float32(alpha) * x)) * (y + np.float32(1.0))
