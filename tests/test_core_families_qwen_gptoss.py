"""The families qwen2, qwen3, qwen3moe and gpt-oss on tiny random models (tests/tiny_gguf.py:
real tensor names and metadata keys, a byte-level BPE vocabulary trained with the family's
pre-tokenizer). The core must give the numpy reference's logits (tests/reference/numpy_forward.py)
for every position of a prompt longer than gpt-oss' sliding window; lanner.LLM must load each
file, report its family and stop at the family's end-of-generation tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

import lanner._core as core
from reference.numpy_forward import ReferenceModel
from tiny_gguf import FAMILY_ARCHS, MOE_ARCHS, write_tiny_arch

PROMPT = [int(t) for t in np.random.default_rng(1).integers(0, 456, 24)]  # byte + merge tokens


def _logits(path: str, tokens: list[int], flash_attn: bool = True) -> np.ndarray:
    ctx = core.Context(core.Model(path), n_ctx=64, n_batch=32, n_seq_max=1, n_threads=2,
                       flash_attn=flash_attn)
    n = len(tokens)
    return ctx.decode(np.array(tokens, np.int32), np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                      np.ones(n, np.uint8)).copy()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("flash_attn", [True, False], ids=["flash", "softmax"])
@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_family_matches_reference_f32(tmp_path, arch, flash_attn):
    """Both attention paths (sinks go through ggml_flash_attn_ext_add_sinks / ..soft_max_add_sinks)."""
    path = write_tiny_arch(tmp_path / f"{arch}.gguf", arch)
    got, want = _logits(path, PROMPT, flash_attn), ReferenceModel(path).forward(PROMPT)
    assert got.shape == want.shape == (len(PROMPT), 480)
    cos = _cos(got, want)
    assert cos.min() >= 0.9999, (arch, cos)  # measured >= 0.999999
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


# (arch, weight type, expert type): the types the families ship in that `gguf` can write
# (no Q4_K writer there). Tolerance: ggml rounds activations to 8 bits for Q8_0/MXFP4 weights;
# measured min cos 0.99988 (qwen*), 0.9985 (gpt-oss, whose clamped SwiGLU amplifies it).
QUANT_CASES = [(a, "F16", None) for a in FAMILY_ARCHS] + [(a, "Q8_0", None) for a in FAMILY_ARCHS] + [
    ("qwen3moe", "Q8_0", "MXFP4"), ("gpt-oss", "Q8_0", "MXFP4"), ("gpt-oss", "F16", "MXFP4")]


@pytest.mark.parametrize("arch,weight_type,expert_type", QUANT_CASES)
def test_family_quant_types_match_reference(tmp_path, arch, weight_type, expert_type):
    path = write_tiny_arch(tmp_path / f"{arch}.gguf", arch, weight_type=weight_type,
                             expert_type=expert_type)
    got, want = _logits(path, PROMPT), ReferenceModel(path).forward(PROMPT)
    cos = _cos(got, want)
    assert np.isfinite(got).all()
    assert cos.min() > (0.9999 if weight_type == "F16" and expert_type is None else 0.998), cos


def test_moe_routing_uses_expert_used_count(tmp_path):
    """The same weights routed through 3 experts instead of 2 change the logits (top-k is read)."""
    two = _logits(write_tiny_arch(tmp_path / "k2.gguf", "qwen3moe"), PROMPT)
    three_path = write_tiny_arch(tmp_path / "k3.gguf", "qwen3moe", expert_used_count=3)
    three = _logits(three_path, PROMPT)
    assert _cos(two, three).min() < 0.999
    assert _cos(three, ReferenceModel(three_path).forward(PROMPT)).min() >= 0.9999


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_llm_reports_family_and_eog(tmp_path, arch):
    import lanner

    llm = lanner.LLM(write_tiny_arch(tmp_path / f"{arch}.gguf", arch), n_ctx=128)
    assert llm.metadata["architecture"] == arch
    tok = llm.tokenizer
    eog = {tok.token_text(i) for i in tok.eog_ids}
    if arch == "gpt-oss":  # Harmony: <|end|> ends a message, <|return|> / <|call|> the turn
        assert {"<|return|>", "<|call|>"} <= eog and "<|end|>" not in eog
        assert tok.eos_id == tok.token_id("<|return|>")
    else:
        assert "<|im_end|>" in eog and tok.eos_id == tok.token_id("<|im_end|>")
    assert all(tok.is_eog(i) for i in tok.eog_ids)
    # the family's pre-tokenizer and special-token parsing are in place
    ids = tok.encode("Hi <|im_end|>" if arch != "gpt-oss" else "Hi <|return|>", parse_special=True)
    assert tok.is_eog(ids[-1])
    out = llm.generate("Hello", max_tokens=4)  # greedy, through the engine
    assert 1 <= len(out.token_ids) <= 4
