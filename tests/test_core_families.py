"""Each model family the core loads beyond the two real models (tiny random-weight GGUFs from
tests/tiny_gguf.py) gives the numpy reference's logits (tests/reference/numpy_forward.py).

Families: llama3 (`llama` + rope_freqs), mistral (`llama` + sliding window, SentencePiece),
gemma2 (soft-capping, sandwich norms, alternating windows), phi3 (fused qkv and gate/up,
LongRoPE). F32 weights: per-position cosine >= 0.9999 and the same argmax everywhere (measured
1.0 to 6 digits); Q8_0: >= 0.9995 (ggml quantizes activations to 8 bits; near-ties may flip).
Each family's own feature is shown to matter: the reference with it switched off is far away.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lanner._core as core
from reference.numpy_forward import ReferenceModel
from tiny_gguf import FAMILIES, write_tiny_family

# 20 tokens: longer than the tiny windows (6), spans several RoPE wavelengths
IDS = [5, 9, 33, 70, 100, 200, 17, 8, 44, 300, 12, 13, 2, 3, 4, 60, 61, 62, 63, 64]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("families")
    return {(f, wt): write_tiny_family(d / f"{f}-{wt}.gguf", f, weight_type=wt)
            for f in FAMILIES for wt in ("F32", "Q8_0")}


def _core_logits(path: str, n_ctx: int = 128, ids=IDS, flash_attn: bool = True) -> np.ndarray:
    m = core.Model(path)
    c = core.Context(m, n_ctx=n_ctx, n_batch=64, n_seq_max=1, n_threads=2, flash_attn=flash_attn)
    n = len(ids)
    return c.decode(np.array(ids, np.int32), np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                    np.ones(n, np.uint8)).copy()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_matches_reference(files, family):
    path = files[family, "F32"]
    got, want = _core_logits(path), ReferenceModel(path, n_ctx=128).forward(IDS)
    assert got.shape == want.shape and np.isfinite(got).all()
    cos = _cos(got, want)
    assert cos.min() >= 0.9999, (family, cos)
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_softmax_attention_path_matches_reference(files, family):
    """The non-flash path (softmax(KQ)V over a transposed V cache) too: soft-capping, windows,
    the fused-qkv split's V layout."""
    path = files[family, "F32"]
    got, want = _core_logits(path, flash_attn=False), ReferenceModel(path, n_ctx=128).forward(IDS)
    assert _cos(got, want).min() >= 0.9999
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_q8_0_matches_reference(files, family):
    path = files[family, "Q8_0"]
    cos = _cos(_core_logits(path), ReferenceModel(path, n_ctx=128).forward(IDS))
    assert cos.min() >= 0.9995, (family, cos)  # measured 0.99963-0.99990


def _ablated(path: str, n_ctx: int = 128, **changes) -> np.ndarray:
    ref = ReferenceModel(path, n_ctx=n_ctx)
    if "rope_factors" in changes:
        ref.rope_factors = changes.pop("rope_factors")
    ref.hparams = dataclasses.replace(ref.hparams, **changes)
    return ref.forward(IDS)


# (family, what is switched off in the reference); min cosine to the core then: 0.49-0.995
ABLATIONS = [
    ("llama3", dict(rope_factors=None)),
    ("mistral", dict(sliding_window=0, layer_swa=(False, False))),
    ("gemma2", dict(attn_softcap=0.0)),
    ("gemma2", dict(final_softcap=0.0)),
    ("gemma2", dict(layer_swa=(False,) * 4)),
    ("phi3", dict(rope_factors=None)),
    ("phi3", dict(rope_attn_factor=1.0)),
]


@pytest.mark.parametrize("family,changes", ABLATIONS, ids=lambda x: x if isinstance(x, str) else
                         "-".join(x))
def test_family_feature_is_what_matches(files, family, changes):
    """The comparison above can fail: without the family's feature the reference is far away."""
    path = files[family, "F32"]
    assert _cos(_core_logits(path), _ablated(path, **changes)).min() < 0.999


def test_phi3_longrope_factors_follow_the_context(files):
    """Long factors when the context exceeds rope.scaling.original_context_length (64), else
    short ones, as llama.cpp chooses them; the two differ."""
    path = files["phi3", "F32"]
    short, long = _core_logits(path, n_ctx=64), _core_logits(path, n_ctx=128)
    assert _cos(short, ReferenceModel(path, n_ctx=64).forward(IDS)).min() >= 0.9999
    assert _cos(long, ReferenceModel(path, n_ctx=128).forward(IDS)).min() >= 0.9999
    assert _cos(short, long).min() < 0.99


def test_families_report_their_architecture(files):
    archs = {f: core.Model(files[f, "F32"]).arch for f in FAMILIES}
    assert archs == {"llama3": "llama", "mistral": "llama", "gemma2": "gemma2", "phi3": "phi3"}


def test_gemma2_softcap_defaults(tmp_path):
    """Without the keys Gemma 2's published caps (50, 30) apply; tiny logits stay far below
    30, so the default-capped model differs from the tiny file's (2, 3) caps."""
    path = write_tiny_family(tmp_path / "g2.gguf", "gemma2", attn_logit_softcapping=None,
                             final_logit_softcapping=None)
    ref = ReferenceModel(path, n_ctx=128)
    assert (ref.hparams.attn_softcap, ref.hparams.final_softcap) == (50.0, 30.0)
    assert _cos(_core_logits(path), ref.forward(IDS)).min() >= 0.9999


@pytest.mark.parametrize("family", FAMILIES)
def test_llm_facade_generates_each_family(files, family):
    """lanner.LLM loads each family, reports it, and its greedy generation is the core's argmax
    chain; the chat template is the family's built-in fallback."""
    import lanner

    path = files[family, "F32"]
    prompt = IDS[:8]
    c = core.Context(core.Model(path), n_ctx=128, n_batch=64, n_seq_max=1, n_threads=1)
    row = c.decode(np.array(prompt, np.int32), np.arange(8, dtype=np.int32), np.zeros(8, np.int32),
                   np.array([0] * 7 + [1], np.uint8))[0].copy()
    want = []
    for i in range(8):
        want.append(int(np.argmax(row)))
        row = c.decode(np.array(want[-1:], np.int32), np.array([8 + i], np.int32), np.zeros(1, np.int32),
                       np.ones(1, np.uint8))[0].copy()
    with lanner.LLM(path, n_ctx=128, n_threads=1, n_parallel=1) as llm:
        assert llm.metadata["architecture"] == {"llama3": "llama", "mistral": "llama"}.get(family, family)
        origin = {"llama3": "llama3", "gemma2": "gemma", "phi3": "phi3"}.get(family)
        assert origin is None or llm.metadata["chat_template_origin"] == origin
        out = llm.generate(prompt, max_tokens=8, temperature=0, ignore_eos=True)
        assert out.token_ids == want
        assert llm.chat([{"role": "user", "content": "Hi"}], max_tokens=4).finish_reason in ("stop", "length")


def test_llm_frees_the_native_vocabulary_tables(files):
    """Once the tokenizer is built, LLM drops the vocabulary tables from the native GGUF context
    (their memory freed); the other keys stay, and tokenizing still works."""
    import lanner

    path = files["mistral", "F32"]
    tables = ["tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"]
    m = core.Model(path)
    assert set(tables) <= set(m.metadata)
    assert m.drop_metadata(tables + ["no.such.key"]) == 3
    left = m.metadata
    assert not set(tables) & set(left) and left["general.architecture"] == "llama"
    assert m.drop_metadata(tables) == 0
    with lanner.LLM(path, n_ctx=64, n_threads=1, n_parallel=1) as llm:
        assert not set(tables) & set(llm.model.metadata)
        assert llm.gguf_metadata["general.architecture"] == "llama"
        assert llm.tokenizer.encode("Hi there", add_special=False)
        assert llm.generate(IDS[:4], max_tokens=2, temperature=0, ignore_eos=True).token_ids


def test_phi3_separate_qkv_equals_fused(tmp_path):
    """phi3 files may carry attn_q/k/v instead of attn_qkv: the same rows give the same logits."""
    from tiny_gguf import family_tensors, family_vocab

    fused = write_tiny_family(tmp_path / "fused.gguf", "phi3")
    t = family_tensors("phi3", len(family_vocab("phi3")["tokenizer.ggml.tokens"]))
    split = {}
    for il in range(2):
        qkv = t[f"blk.{il}.attn_qkv.weight"]  # (64 + 32 + 32, 64): q, k, v rows
        split.update({f"blk.{il}.attn_q.weight": qkv[:64], f"blk.{il}.attn_k.weight": qkv[64:96],
                      f"blk.{il}.attn_v.weight": qkv[96:]})
    separate = write_tiny_family(tmp_path / "separate.gguf", "phi3", tensor_overrides=split,
                                 skip_tensors={"blk.0.attn_qkv.weight", "blk.1.attn_qkv.weight"})
    np.testing.assert_allclose(_core_logits(separate), _core_logits(fused), rtol=0, atol=1e-5)
