"""The numpy reference forward pass (tests/reference/numpy_forward.py) needs no peer to be tested.

Golden ids come from a run validated against llama-cpp-python by
tests/reference/check_against_llama_cpp.py (same greedy ids there; every step's top1-top2 logit
margin >= 1, so BLAS summation order cannot flip them). Greedy decoding is checked by teacher
forcing: one causal pass over prompt + continuation, argmax at each position = next golden id.
The logit of each golden id is pinned too (to 0.02; llama.cpp itself differs by ~0.2 rms from its
8-bit activations): that catches changes too small to flip an argmax, like a wrong RoPE base.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference.numpy_forward import ReferenceModel, apply_rope, causal_mask

# (prompt ids, greedy continuation ids, reference logit of each continuation id at its step);
# prompts tokenized by each model's own tokenizer.
GOLDEN = {
    "smollm2": [
        # "1, 2, 3, 4, 5," -> " 6, 7,"
        ([33, 28, 216, 34, 28, 216, 35, 28, 216, 36, 28, 216, 37, 28],
         [216, 38, 28, 216, 39, 28], [20.874, 35.027, 32.25, 21.774, 35.965, 32.16]),
        # "The capital of France is" -> " Paris.\n\n"
        ([504, 3575, 282, 4649, 314], [7042, 30, 198, 198], [17.371, 25.143, 18.014, 30.587]),
    ],
    "gemma3": [
        # <bos>"The quick brown fox" -> " jumps over the lazy dog."
        ([2, 818, 3823, 8864, 37423], [38167, 1024, 506, 31770, 4799, 236761],
         [23.407, 26.527, 24.124, 22.147, 22.808, 22.207]),
        # <bos>"Monday, Tuesday, Wednesday," -> " Thursday, Friday, Saturday,"
        ([2, 49381, 236764, 9863, 236764, 10119, 236764],
         [9853, 236764, 7672, 236764, 8224, 236764],
         [26.903, 22.154, 27.538, 21.416, 26.699, 21.496]),
    ],
}


@pytest.fixture(scope="module")
def models(smollm2_file, gemma3_file) -> dict[str, ReferenceModel]:
    return {"smollm2": ReferenceModel(smollm2_file), "gemma3": ReferenceModel(gemma3_file)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_greedy_matches_golden_ids(models, name):
    model = models[name]
    for prompt, cont, cont_logits in GOLDEN[name]:
        tokens = prompt + cont
        logits = model.forward(tokens)  # (n_tokens, n_vocab)
        assert logits.shape == (len(tokens), model.n_vocab)
        assert logits.dtype == np.float32
        assert np.isfinite(logits).all()
        steps = logits[len(prompt) - 1:-1]  # (len(cont), n_vocab): row i predicts cont[i]
        assert steps.argmax(-1).tolist() == cont
        np.testing.assert_allclose(steps[np.arange(len(cont)), cont], cont_logits, atol=0.02)


@pytest.mark.slow
def test_forward_is_causal(models):
    """Logits at a position do not depend on later tokens: a prefix's pass equals the first rows."""
    model = models["smollm2"]
    tokens = GOLDEN["smollm2"][0][0]
    full = model.forward(tokens)
    head = model.forward(tokens[:5])
    np.testing.assert_allclose(head, full[:5], rtol=0, atol=2e-3)


@pytest.mark.slow
def test_conventions_read_from_metadata(models):
    llama, gemma = models["smollm2"].hparams, models["gemma3"].hparams
    assert (llama.rope_neox, gemma.rope_neox) == (False, True)
    assert "output.weight" not in models["smollm2"].weights  # tied: logits use token_embd
    assert models["smollm2"].output is models["smollm2"].weights["token_embd.weight"]
    assert [il for il, swa in enumerate(gemma.layer_swa) if not swa] == [5, 11, 17]
    assert (gemma.sliding_window, gemma.rope_base, gemma.rope_base_swa) == (512, 1e6, 1e4)
    assert gemma.attn_scale == pytest.approx(256 ** -0.5)


def test_unknown_arch_raises(tmp_path):
    import gguf

    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(NotImplementedError, match="mamba"):
        ReferenceModel(path)


@pytest.mark.parametrize("neox", [False, True])
def test_rope_scores_depend_on_distance_only(neox):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 16)).astype(np.float32)
    k = rng.standard_normal((1, 1, 16)).astype(np.float32)

    def score(m, n):
        qm = apply_rope(q, np.array([m]), 16, 10000.0, 1.0, neox)
        kn = apply_rope(k, np.array([n]), 16, 10000.0, 1.0, neox)
        return float((qm * kn).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_rope_adjacent_pairs_equal_neox_on_permuted_rows():
    """Why llama GGUFs use adjacent-pair RoPE: the converter interleaves each head's halves
    (element i -> 2i, i + d/2 -> 2i + 1), which turns NeoX rotation into adjacent pairs."""
    d = 8
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, d)).astype(np.float32)  # (n_tokens, n_heads, head_dim)
    perm = np.empty(d, dtype=int)
    perm[0::2], perm[1::2] = np.arange(d // 2), np.arange(d // 2, d)  # stored[j] = hf[perm[j]]
    pos = np.array([0, 5, 11])
    neox = apply_rope(x, pos, d, 100.0, 1.0, neox=True)
    pairs = apply_rope(x[..., perm], pos, d, 100.0, 1.0, neox=False)
    np.testing.assert_allclose(pairs, neox[..., perm], atol=1e-6)


def test_sliding_window_masks_distance_window_and_more():
    ok = causal_mask(5, 2)  # (query, key)
    expected = np.array([[1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0],
                         [0, 1, 1, 0, 0],
                         [0, 0, 1, 1, 0],
                         [0, 0, 0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(ok, expected)
    np.testing.assert_array_equal(causal_mask(3, 0), np.tril(np.ones((3, 3), dtype=bool)))
