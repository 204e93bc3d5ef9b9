"""A tiny random Gemma 3 text model whose vocabulary has Gemma 3's image tokens, to pair with a
tiny `gemma3` projector (tests/tiny_mmproj.py) as a vision-language model in tests.

write_tiny_gemma3() writes architecture `gemma3` (q/k norms, post-norms, NeoX RoPE, a sliding
window on 5 of 6 layers) with a SentencePiece Gemma vocabulary trained on the test corpus plus
`<start_of_image>` / `<end_of_image>` control tokens.
"""

from __future__ import annotations

import numpy as np
import gguf

import tiny_gguf
import tiny_vocab

N_EMBD, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF, N_LAYER = 64, 4, 2, 16, 128, 2
IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>")


def gemma3_vocab() -> dict:
    v = dict(tiny_vocab.spm_gguf_vocab("gemma"))
    v["tokenizer.ggml.tokens"] = list(v["tokenizer.ggml.tokens"]) + list(IMAGE_TOKENS)
    v["tokenizer.ggml.scores"] = np.concatenate([v["tokenizer.ggml.scores"], np.zeros(2, np.float32)])
    v["tokenizer.ggml.token_type"] = np.concatenate(
        [v["tokenizer.ggml.token_type"], np.full(2, tiny_vocab.CONTROL, np.int32)])
    return v


def gemma3_tensors(n_vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def mat(n_out, n_in):
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    q, kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    t = {"token_embd.weight": rng.standard_normal((n_vocab, N_EMBD)) / np.sqrt(N_EMBD),
         "output_norm.weight": norm(N_EMBD)}
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = norm(N_EMBD)
        t[p + "attn_q.weight"], t[p + "attn_k.weight"], t[p + "attn_v.weight"] = mat(q, N_EMBD), mat(kv, N_EMBD), mat(kv, N_EMBD)
        t[p + "attn_q_norm.weight"], t[p + "attn_k_norm.weight"] = norm(HEAD_DIM), norm(HEAD_DIM)
        t[p + "attn_output.weight"] = mat(N_EMBD, q)
        t[p + "post_attention_norm.weight"] = norm(N_EMBD)
        t[p + "ffn_norm.weight"] = norm(N_EMBD)
        t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"] = mat(N_FF, N_EMBD), mat(N_FF, N_EMBD)
        t[p + "ffn_down.weight"] = mat(N_EMBD, N_FF)
        t[p + "post_ffw_norm.weight"] = norm(N_EMBD)
    return {k: v.astype(np.float32) for k, v in t.items()}


def write_tiny_gemma3(path, seed: int = 0, sliding_window: int = 512) -> str:
    vocab = gemma3_vocab()
    meta = {"context_length": 2048, "embedding_length": N_EMBD, "block_count": N_LAYER,
            "feed_forward_length": N_FF, "attention.head_count": N_HEAD,
            "attention.head_count_kv": N_HEAD_KV, "attention.key_length": HEAD_DIM,
            "attention.value_length": HEAD_DIM, "attention.sliding_window": sliding_window,
            "rope.freq_base": 1000000.0, "attention.layer_norm_rms_epsilon": 1e-6}
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny-gemma3-vision")
    for key, val in meta.items():
        tiny_gguf._add_kv(w, f"gemma3.{key}", val)
    for key, val in vocab.items():
        tiny_gguf._add_kv(w, key, val)
    tiny_gguf._write_tensors(w, gemma3_tensors(len(vocab["tokenizer.ggml.tokens"]), seed), (), "F32")
    return str(path)
