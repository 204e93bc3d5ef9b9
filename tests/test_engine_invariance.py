"""Reproducible output through the engine on both real models: a request's tokens and logprobs
depend only on the request, exactly (no near-tie allowance).

Three prompts (two short, one long enough for a >= 64-token ubatch) with greedy sampling and
one seeded-sampling request are run (a) cold, one by one; (b) again with their prefixes cached;
(c) in one batch of 8 with unrelated neighbours of other lengths (steps mix decode tokens and
prompt chunks); (d) after 50 unrelated requests churned a small cache (evictions, seq_cp
sharing, compaction); (e) the long prompt prefilled in chunks of 16, 48 and 80 tokens.
(a) and (b) run on 2 threads, the rest on 1: the thread count does not change a bit either.
"""

from __future__ import annotations

import numpy as np
import pytest

from lanner.engine import Engine
from lanner.types import FinishReason, GenerateRequest, SamplingParams, TokenEvent

core = pytest.importorskip("lanner._core")
pytestmark = pytest.mark.slow

MAX_TOKENS = 6
TEXTS = [
    "The capital of France is",
    "def add(a, b):\n    return",
    "The river wound slowly through the valley, past the old mill and the orchards, where the "
    "farmers had gathered every autumn for as long as anyone could remember. That year the "
    "harvest was late, the nights were cold, and the children of the village were told stories "
    "about the winter that never ended. Nobody believed them, of course, but everyone listened, "
    "because the stories were good and the fire was warm. One of the children, a girl named",
]


class RecordingContext:
    """Delegates to a `_core.Context`; records (tokens, distinct sequences) of every decode."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.steps: list[tuple[int, int]] = []

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def decode(self, tokens, pos, seq_id, want_logits):
        self.steps.append((int(tokens.shape[0]), len(set(seq_id.tolist()))))
        return self._ctx.decode(tokens, pos, seq_id, want_logits)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def setup(request):
    from lanner.default_model import gemma3_path, smollm2_path
    from lanner.engine.sampling import Sampler
    from lanner.text.detokenizer import Detokenizer
    from lanner.text.tokenizer import Tokenizer

    model = core.Model(str(smollm2_path() if request.param == "smollm2" else gemma3_path()))
    tok = Tokenizer.from_metadata(model.metadata)

    def engine(n_ctx=1024, n_parallel=1, budget=512, max_step_ms=250.0, n_threads=1):
        ctx = RecordingContext(core.Context(model, n_ctx=n_ctx, n_batch=512, n_seq_max=16, n_threads=n_threads))
        eng = Engine(ctx, tok, n_parallel=n_parallel, step_token_budget=budget, max_step_ms=max_step_ms,
                     n_vocab=model.n_vocab,
                     sampler_factory=Sampler, detokenizer_factory=lambda t, stop: Detokenizer(t, stop=stop))
        return eng, ctx

    prompts = [tok.encode(t) for t in TEXTS]
    assert len(prompts[2]) > 64  # prefilled cold as one ubatch of more than 64 tokens
    return model, engine, prompts


def _requests(prompts):
    """The requests under test: greedy for each prompt, plus one seeded draw on the long one."""
    greedy = SamplingParams(temperature=0.0, logprobs=2)
    seeded = SamplingParams(temperature=0.9, top_k=40, seed=1234, logprobs=2)
    return [(p, greedy) for p in prompts] + [(prompts[2], seeded)]


def _req(prompt, sampling, max_tokens=MAX_TOKENS):
    return GenerateRequest(prompt_tokens=list(prompt), max_tokens=max_tokens, sampling=sampling, ignore_eos=True)


def _result(stream):
    """((token id, logprob, top logprobs) per token, cached prompt tokens)."""
    evs = [ev for ev in stream if isinstance(ev, TokenEvent)]
    fin = stream.finish
    assert fin.reason == FinishReason.LENGTH, (fin.reason, fin.error)
    return [(e.token_id, e.logprob, [(t.token_id, t.logprob) for t in e.top_logprobs or ()]) for e in evs], \
        fin.usage.cached_tokens


def _evict_all(eng):
    while eng._cache.evict_lru():
        pass


def _noise(model, n, seed, lo=4, hi=24):
    """n unrelated prompts of random ids and lengths in [lo, hi)."""
    rng = np.random.default_rng(seed)
    top = min(model.n_vocab, 20000)
    return [[int(t) for t in rng.integers(1000, top, int(rng.integers(lo, hi)))] for _ in range(n)]


def test_same_tokens_cold_cached_batched_churned_and_chunked(setup):
    model, engine, prompts = setup
    reqs = _requests(prompts)

    # (a) cold, one by one, and (b) again at once: the whole prompt but its last token is cached
    eng, _ = engine(n_threads=2)  # the other cases run on 1 thread: the thread count is no input either
    try:
        ref = []
        for p, s in reqs:
            _evict_all(eng)
            got, cached = _result(eng.submit(_req(p, s)))
            assert cached == 0
            ref.append(got)
            again, cached = _result(eng.submit(_req(p, s)))
            assert cached == len(p) - 1
            assert again == got, "(b) prefix cached"
    finally:
        eng.close()

    # (c) in a batch of 8 with unrelated neighbours of other lengths and lifetimes
    noise = _noise(model, 4, seed=1, lo=3, hi=120)
    eng, ctx = engine(n_parallel=8, max_step_ms=None)  # steps as large as the budget allows
    try:
        streams = []
        for i, (p, s) in enumerate(reqs):
            streams.append(eng.submit(_req(p, s)))
            eng.submit(_req(noise[i], SamplingParams(), max_tokens=2 + 3 * i))
        assert [_result(st)[0] for st in streams] == ref, "(c) batched with neighbours"
    finally:
        eng.close()
    assert max(n for n, k in ctx.steps if k > 1) > 64  # steps mixed sequences beyond 64 tokens

    # (d) after 50 unrelated requests churned a small cache, themselves among neighbours
    churn = _noise(model, 40, seed=2, hi=20)
    churn += [churn[k][:6] + c for k, c in enumerate(_noise(model, 10, seed=3))]  # shared prefixes
    assert len(churn) == 50
    eng, ctx = engine(n_ctx=256, n_parallel=4, budget=48, max_step_ms=None)  # no timing in it
    try:
        for st in [eng.submit(_req(p, SamplingParams(), max_tokens=1 + k % 3)) for k, p in enumerate(churn)]:
            _result(st)
        assert ctx.kv_compactions > 0  # the churn left the cache fragmented at least once
        streams = []
        for i, (p, s) in enumerate(reqs):
            streams.append(eng.submit(_req(p, s)))
            eng.submit(_req(churn[i], SamplingParams(), max_tokens=3))
        assert [_result(st)[0] for st in streams] == ref, "(d) after churn"
    finally:
        eng.close()

    # (e) the long prompt prefilled in chunks of 16, 48 and 80 tokens
    for budget in (16, 48, 80):
        eng, ctx = engine(budget=budget)
        try:
            got, _ = _result(eng.submit(_req(prompts[2], reqs[2][1])))
        finally:
            eng.close()
        assert max(n for n, _ in ctx.steps) == min(budget, len(prompts[2]))
        assert got == ref[2], f"(e) chunks of {budget}"
