"""Sampler: greedy, seeded draws, top-k/top-p/min-p masks, penalties, logprobs, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lanner.engine.sampling import Sampler
from lanner.types import SamplingParams, ValidationError

OFF = dict(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)  # every filter and penalty off


def sp(**kw) -> Sampler:
    return Sampler(SamplingParams(**{**OFF, "temperature": 1.0, "seed": 0, **kw}))


def probs_logits(*p: float) -> np.ndarray:
    return np.log(np.array(p, dtype=np.float64)).astype(np.float32)


def random_logits(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 4).astype(np.float32)


# ---- greedy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [5, 49152, 262144])
def test_greedy_is_argmax(n):
    s = Sampler(SamplingParams(temperature=0.0))
    for seed in range(5):
        l = random_logits(n, seed)
        assert s.sample(l, []) == int(np.argmax(l))


def test_greedy_sees_penalties_and_bias():
    l = np.array([1.0, 3.0, 2.9, 0.0], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.1)).sample(l, [1]) == 2  # 3.0/1.1 < 2.9
    assert Sampler(SamplingParams(temperature=0.0, logit_bias={3: 5.0})).sample(l, []) == 3


def test_sample_leaves_logits_unchanged_and_accepts_read_only():
    l = random_logits(1000)
    before = l.copy()
    s = Sampler(SamplingParams(seed=1, repeat_penalty=1.3, presence_penalty=0.5, logit_bias={7: 3.0}))
    s.sample(l, list(range(50)))
    assert np.array_equal(l, before)
    l.flags.writeable = False
    s.sample(l, list(range(50)))
    s.sample(l.astype(np.float64), [])


# ---- seeded draws --------------------------------------------------------------------------------

def draws(sampler: Sampler, logits: np.ndarray, n: int) -> list[int]:
    return [sampler.sample(logits, []) for _ in range(n)]


def test_same_seed_same_tokens():
    l = random_logits(5000, 3) / 4  # flat-ish: many candidates
    params = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    a = draws(Sampler(SamplingParams(**params)), l, 100)
    b = draws(Sampler(SamplingParams(**params)), l, 100)
    c = draws(Sampler(SamplingParams(**{**params, "seed": 99})), l, 100)
    assert a == b and a != c
    assert len(set(a)) > 50


def test_default_params_reproducible_on_large_vocab():
    l = random_logits(262144, 5)
    a = draws(Sampler(SamplingParams(seed=7)), l, 20)
    b = draws(Sampler(SamplingParams(seed=7)), l, 20)
    assert a == b
    allowed = set(Sampler(SamplingParams(seed=7)).candidates(l).tolist())
    assert set(a) <= allowed and len(allowed) <= 40


def test_seed_none_is_random_but_valid():
    l = probs_logits(0.25, 0.25, 0.25, 0.25)
    s = Sampler(SamplingParams(**OFF, seed=None))
    assert set(draws(s, l, 50)) <= {0, 1, 2, 3}


def test_draw_frequencies_follow_tempered_softmax():
    l = probs_logits(0.6, 0.3, 0.1)
    for t in (1.0, 0.5, 2.0):
        s = sp(temperature=t, seed=2024)
        counts = np.bincount(draws(s, l, 20000), minlength=3) / 20000
        want = np.exp(l.astype(np.float64) / t)
        want /= want.sum()
        assert np.abs(counts - want).max() < 0.015, (t, counts, want)


# ---- masks on hand-made distributions --------------------------------------------------------------

def test_top_k_mask():
    l = np.array([0.1, 2.0, -1.0, 3.0, 1.5, 0.2], dtype=np.float32)
    assert sp(top_k=3).candidates(l).tolist() == [3, 1, 4]
    assert sp(top_k=1).candidates(l).tolist() == [3]
    assert sp(top_k=0).candidates(l).size == 6 and sp(top_k=100).candidates(l).size == 6
    assert set(draws(sp(top_k=3, seed=5), l, 300)) == {1, 3, 4}


def test_top_k_ties_take_lower_ids():
    l = np.array([1.0, 5.0, 1.0, 1.0, 5.0], dtype=np.float32)
    assert sp(top_k=3).candidates(l).tolist() == [1, 4, 0]


def test_top_k_on_large_vocab_matches_full_sort():
    l = random_logits(262144, 11)
    want = np.argsort(-l, kind="stable")[:40]
    assert sp(top_k=40).candidates(l).tolist() == want.tolist()
    peaked = l.copy()
    peaked[123] = 100.0  # every other token more than 32 nats below: full-partition fallback
    assert sp(top_k=40).candidates(peaked).tolist() == np.argsort(-peaked, kind="stable")[:40].tolist()


def test_top_p_mask():
    l = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert sp(top_p=0.5).candidates(l).tolist() == [0]
    assert sp(top_p=0.8).candidates(l).tolist() == [0, 1]     # 0.5 + 0.3 reaches 0.8 exactly
    assert sp(top_p=0.81).candidates(l).tolist() == [0, 1, 2]
    assert sp(top_p=0.96).candidates(l).tolist() == [0, 1, 2, 3]
    assert sp(top_p=0.0).candidates(l).tolist() == [0]
    # after top_k the probabilities are renormalized over the kept tokens: 0.5/0.95 + 0.3/0.95 >= 0.8
    assert sp(top_k=3, top_p=0.8).candidates(l).tolist() == [0, 1]
    assert sp(top_k=2, top_p=0.6).candidates(l).tolist() == [0]  # 0.5/0.8 = 0.625 >= 0.6
    assert sp(top_k=2, top_p=0.7).candidates(l).tolist() == [0, 1]
    assert set(draws(sp(top_p=0.8, seed=3), l, 300)) == {0, 1}


def test_top_p_on_large_vocab_matches_reference():
    l = random_logits(49152, 8) / 2
    p = np.exp(l.astype(np.float64) - l.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    want = order[: int(np.searchsorted(cum, 0.9)) + 1]
    assert sp(top_p=0.9).candidates(l).tolist() == want.tolist()
    # with min_p as well: the shorter of the two prefixes
    floor = l.max() + math.log(0.2)
    assert sp(top_p=0.9, min_p=0.2).candidates(l).tolist() == [i for i in want.tolist() if l[i] >= floor]


def test_min_p_mask():
    l = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert sp(min_p=0.61).candidates(l).tolist() == [0]          # keep p >= 0.305
    assert sp(min_p=0.5).candidates(l).tolist() == [0, 1]        # keep p >= 0.25
    assert sp(min_p=0.31).candidates(l).tolist() == [0, 1]       # keep p >= 0.155
    assert sp(min_p=0.29).candidates(l).tolist() == [0, 1, 2]    # keep p >= 0.145
    assert sp(min_p=0.11).candidates(l).tolist() == [0, 1, 2]
    assert sp(min_p=0.09).candidates(l).tolist() == [0, 1, 2, 3]
    assert sp(min_p=1.0).candidates(l).tolist() == [0]
    assert sp(top_k=2, min_p=0.09).candidates(l).tolist() == [0, 1]


def test_temperature_applies_after_filters():
    # min_p uses the untempered distribution: at T=5 token 2 would be likely, but it is cut first
    l = probs_logits(0.7, 0.25, 0.05)
    assert sp(min_p=0.1, temperature=5.0).candidates(l).tolist() == [0, 1]
    assert set(draws(sp(min_p=0.1, temperature=5.0, seed=9), l, 500)) == {0, 1}


# ---- penalties ---------------------------------------------------------------------------------------

def changed(before: np.ndarray, after: np.ndarray) -> list[int]:
    return np.flatnonzero(before != after).tolist()


def test_repeat_penalty_llama_cpp_semantics():
    l = np.array([2.0, -2.0, 1.0, -1.0, 0.5, 3.0], dtype=np.float32)
    s = sp(repeat_penalty=2.0, repeat_last_n=3)
    out = s.adjusted_logits(l, [5, 4, 0, 1, 1])  # window: last 3 = [0, 1, 1]
    assert changed(l, out) == [0, 1]
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(-4.0)  # positive /2, negative *2
    assert changed(l, sp(repeat_penalty=2.0, repeat_last_n=-1).adjusted_logits(l, [5, 4, 0])) == [0, 4, 5]
    assert changed(l, sp(repeat_penalty=2.0, repeat_last_n=0).adjusted_logits(l, [5, 4, 0])) == []
    assert changed(l, sp(repeat_penalty=2.0).adjusted_logits(l, [])) == []


def test_presence_and_frequency_penalties_openai_semantics():
    l = np.zeros(6, dtype=np.float32)
    s = sp(presence_penalty=0.5, frequency_penalty=0.25, repeat_last_n=-1)
    out = s.adjusted_logits(l, [2, 2, 2, 4])
    assert changed(l, out) == [2, 4]
    assert out[2] == pytest.approx(-(3 * 0.25 + 0.5)) and out[4] == pytest.approx(-(0.25 + 0.5))
    neg = sp(presence_penalty=-1.0, repeat_last_n=-1).adjusted_logits(l, [1])
    assert neg[1] == pytest.approx(1.0)


def test_logit_bias_then_penalties():
    l = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    s = sp(logit_bias={0: 1.0, 2: -3.0}, repeat_penalty=2.0, presence_penalty=0.5)
    out = s.adjusted_logits(l, [0, 1])
    # 0: (1+1)/2 - 0.5;  1: 1/2 - 0.5;  2: biased only (not in the window)
    assert out.tolist() == pytest.approx([0.5, 0.0, -2.0])


def test_logit_bias_outside_vocab_is_a_validation_error():
    with pytest.raises(ValidationError) as e:
        sp(logit_bias={10: 1.0}).sample(np.zeros(5, dtype=np.float32), [])
    assert e.value.field == "logit_bias"


# ---- logprobs ----------------------------------------------------------------------------------------

def test_logprobs_are_raw_log_softmax():
    l = random_logits(1000, 4)
    ref = l.astype(np.float64) - np.logaddexp.reduce(l.astype(np.float64))
    s = Sampler(SamplingParams(repeat_penalty=1.5, logit_bias={0: 10.0}))
    lp, top = s.logprobs(l, 17, 5)
    assert lp == pytest.approx(ref[17], abs=1e-5)
    assert [t for t, _ in top] == np.argsort(-ref, kind="stable")[:5].tolist()
    assert [v for _, v in top] == pytest.approx(ref[np.argsort(-ref, kind="stable")[:5]].tolist(), abs=1e-5)
    assert s.logprobs(l, 3, 0) == (pytest.approx(ref[3], abs=1e-5), [])


# ---- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("top_k", -1), ("top_k", 1.5), ("temperature", float("nan")), ("temperature", -0.1),
    ("temperature", float("inf")), ("top_p", 1.01), ("top_p", -0.1), ("min_p", 2.0),
    ("repeat_penalty", 0.0), ("repeat_last_n", -2), ("presence_penalty", 3.0),
    ("frequency_penalty", float("nan")), ("seed", "x"), ("logprobs", 21),
])
def test_invalid_values_raise_validation_error(field, value):
    with pytest.raises(ValidationError) as e:
        Sampler(SamplingParams(**{field: value}))
    assert e.value.field == field and field in str(e.value)


def test_invalid_logit_bias():
    with pytest.raises(ValidationError) as e:
        Sampler(SamplingParams(logit_bias={-1: 1.0}))
    assert e.value.field == "logit_bias"
    with pytest.raises(ValidationError):
        Sampler(SamplingParams(logit_bias={1: float("nan")}))


def test_whole_vocab_draw_across_blocks_follows_softmax():
    """No filter on a large vocabulary: the blocked draw still follows softmax(l / T)."""
    p = np.full(20000, 1e-12)
    p[[4095, 4096, 9000, 19999]] = [0.4, 0.3, 0.2, 0.1]  # around a 4096-token block edge
    l = np.log(p).astype(np.float32)
    s = sp(seed=11)
    counts = np.bincount(draws(s, l, 20000), minlength=l.size) / 20000
    assert counts[[4095, 4096, 9000, 19999]] == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=0.015)
    assert counts.sum() == pytest.approx(1.0)
