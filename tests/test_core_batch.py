"""Batched multi-sequence decode on the real models and on a tiny model of each family
(tests/tiny_gguf.py: llama3, mistral, gemma2, phi3, qwen2, qwen3, qwen3moe, gpt-oss, the last
two with MoE routing; gpt-oss with sinks and a sliding window): batching, seq_cp sharing,
splitting.

Greedy decoding of 4 different sequences in one batch must match decoding each alone, bit for bit;
a prefix shared with seq_cp must give the logits of recomputing it; a prompt longer than
n_batch is split internally without changing the result; a full cache refuses cleanly.
All bit for bit: the core is batch invariant by default (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import lanner._core as core
from tiny_gguf import FAMILIES, FAMILY_ARCHS, write_tiny_arch, write_tiny_family


def _arr(x, dt=np.int32):
    return np.asarray(x, dtype=dt)


def _prompts(n_vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(7)
    lens = [5, 9, 3, 12]
    return [list(rng.integers(10, min(n_vocab, 30000), n)) for n in lens]


@pytest.fixture(scope="module", params=["smollm2", "gemma3", *FAMILIES, *FAMILY_ARCHS])
def model(request, tmp_path_factory):
    from lanner.default_model import gemma3_path, smollm2_path

    if request.param in FAMILIES:
        d = tmp_path_factory.mktemp("batch")
        return core.Model(write_tiny_family(d / f"{request.param}.gguf", request.param))
    if request.param in FAMILY_ARCHS:
        d = tmp_path_factory.mktemp("batch")
        return core.Model(write_tiny_arch(d / f"{request.param}.gguf", request.param))
    return core.Model(str(smollm2_path() if request.param == "smollm2" else gemma3_path()))


def _greedy_alone(model, prompt, steps):
    c = core.Context(model, n_ctx=128, n_batch=64, n_seq_max=1, n_threads=2)
    n = len(prompt)
    lg = c.decode(_arr(prompt), _arr(range(n)), _arr([0] * n), _arr([0] * (n - 1) + [1], np.uint8))
    out, rows = [], [lg[0].copy()]
    for i in range(steps):
        t = int(np.argmax(rows[-1]))
        out.append(t)
        rows.append(c.decode(_arr([t]), _arr([n + i]), _arr([0]), _arr([1], np.uint8))[0].copy())
    return out, rows


def test_batch_of_four_matches_each_alone(model):
    prompts, steps = _prompts(model.n_vocab), 6
    alone = [_greedy_alone(model, p, steps) for p in prompts]

    c = core.Context(model, n_ctx=256, n_batch=64, n_seq_max=4, n_threads=2)
    toks, pos, seq, want = [], [], [], []
    for s, p in enumerate(prompts):  # all four prompts in one batch
        toks += p
        pos += range(len(p))
        seq += [s] * len(p)
        want += [0] * (len(p) - 1) + [1]
    lg = c.decode(_arr(toks), _arr(pos), _arr(seq), _arr(want, np.uint8)).copy()
    gen = [[] for _ in prompts]
    n_exact = 0
    for i in range(steps):
        nxt = [int(np.argmax(lg[s])) for s in range(4)]
        for s in range(4):
            gen[s].append(nxt[s])
            a_row = alone[s][1][i]
            cos = float(np.dot(lg[s], a_row) / (np.linalg.norm(lg[s]) * np.linalg.norm(a_row)))
            assert cos > 0.9999, (s, i, cos)
            n_exact += bool(np.array_equal(lg[s], a_row))
        lg = c.decode(_arr(nxt), _arr([len(p) + i for p in prompts]), _arr(range(4)), _arr([1] * 4, np.uint8)).copy()
    for s in range(4):
        assert gen[s] == alone[s][0], f"sequence {s}: batched {gen[s]} != alone {alone[s][0]}"
    # flash attention visits keys one at a time and the MoE matmuls work per token: exact
    assert n_exact == 4 * steps, f"{n_exact}/{4 * steps} rows bit-identical"


def test_seq_cp_prefix_equals_recompute(model):
    prefix, suffix = _prompts(model.n_vocab)[3], _prompts(model.n_vocab)[1]
    n, m = len(prefix), len(suffix)
    c = core.Context(model, n_ctx=128, n_batch=64, n_seq_max=3, n_threads=2)
    c.decode(_arr(prefix), _arr(range(n)), _arr([0] * n), _arr([0] * n, np.uint8))
    used = c.n_cells_used()
    c.seq_cp(0, 1)
    assert c.n_cells_used() == used  # shared by tagging, not copied
    shared = c.decode(_arr(suffix), _arr(range(n, n + m)), _arr([1] * m), _arr([1] * m, np.uint8)).copy()
    full = prefix + suffix
    fresh = c.decode(_arr(full), _arr(range(n + m)), _arr([2] * (n + m)), _arr([0] * n + [1] * m, np.uint8)).copy()
    np.testing.assert_array_equal(shared, fresh)
    # removing seq 1's tail keeps the shared prefix for seq 0
    c.seq_rm(1, n, -1)
    assert c.seq_pos_max(1) == n - 1 and c.seq_pos_max(0) == n - 1
    c.seq_rm(0)
    c.seq_rm(1)
    assert c.seq_pos_max(0) == -1
    assert c.n_cells_used() == n + m  # only seq 2 remains
    c.seq_keep(1)
    assert c.n_cells_used() == 0


def test_long_prompt_is_split_into_ubatches(model):
    rng = np.random.default_rng(3)
    prompt = list(rng.integers(10, min(model.n_vocab, 20000), 70))
    want = _arr([1] * 70, np.uint8)
    # one ubatch of 70 tokens (where ggml alone would pick its tiled attention kernel) vs
    # ubatches of 7: splitting must not change a single bit
    one = core.Context(model, n_ctx=128, n_batch=70, n_seq_max=1, n_threads=2)
    many = core.Context(model, n_ctx=128, n_batch=7, n_seq_max=1, n_threads=2)
    a = one.decode(_arr(prompt), _arr(range(70)), _arr([0] * 70), want).copy()
    b = many.decode(_arr(prompt), _arr(range(70)), _arr([0] * 70), want).copy()
    assert a.shape == b.shape == (70, model.n_vocab)
    np.testing.assert_array_equal(a, b)


def test_full_cache_and_bad_entries_apply_nothing(model):
    c = core.Context(model, n_ctx=16, n_batch=16, n_seq_max=2, n_threads=2)
    c.decode(_arr(range(10, 22)), _arr(range(12)), _arr([0] * 12), _arr([0] * 12, np.uint8))
    with pytest.raises(core.KvCacheFullError, match="needs 5 cells, 4 of 16"):
        c.decode(_arr(range(5)), _arr(range(5)), _arr([1] * 5), _arr([1] * 5, np.uint8))
    assert c.n_cells_used() == 12
    with pytest.raises(ValueError, match="outside the vocabulary"):
        c.decode(_arr([model.n_vocab]), _arr([0]), _arr([1]), _arr([1], np.uint8))
    with pytest.raises(ValueError, match="sequence id 5"):
        c.decode(_arr([1]), _arr([0]), _arr([5]), _arr([1], np.uint8))
    with pytest.raises(ValueError, match="same length"):
        c.decode(_arr([1, 2]), _arr([0]), _arr([1]), _arr([1], np.uint8))
    assert c.n_cells_used() == 12

