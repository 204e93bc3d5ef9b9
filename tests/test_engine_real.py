"""Engine key tests on the real native core with SmolLM2 and Gemma 3 (greedy, deterministic).

Batched == one at a time, a two-turn conversation reuses turn one's cells (counted in tokens
passed to decode), abort during prefill frees cells and spares the other stream. A ProbeContext
wraps the real context to count decoded tokens and to hold the model thread between steps.
Equality is exact throughout: the core is batch invariant by default (docs/ARCHITECTURE.md),
including where freed cells get reused after an abort.
"""

from __future__ import annotations

import threading

import pytest

from lanner.engine import Engine
from lanner.types import FinishReason, GenerateRequest, SamplingParams, TokenEvent

core = pytest.importorskip("lanner._core")
pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "Once upon a time, in a small village by the river, there lived an old",
]


class ProbeContext:
    """Delegates to a `_core.Context`; counts tokens per decode and can gate each decode."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.decode_calls: list[int] = []
        self.gate: threading.Semaphore | None = None
        self.calls_started = 0
        self._started = threading.Condition()

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def decode(self, tokens, pos, seq_id, want_logits):
        with self._started:
            self.calls_started += 1
            self._started.notify_all()
        if self.gate is not None:
            self.gate.acquire()
        out = self._ctx.decode(tokens, pos, seq_id, want_logits)
        self.decode_calls.append(int(tokens.shape[0]))
        return out

    def wait_started(self, n: int, timeout: float = 60.0) -> None:
        with self._started:
            assert self._started.wait_for(lambda: self.calls_started >= n, timeout), "model thread stalled"

    def step(self, n: int = 1) -> None:
        target = self.calls_started + n
        self.gate.release(n)
        self.wait_started(target)

    def open_gate(self) -> None:
        g, self.gate = self.gate, None
        if g is not None:
            g.release(1 << 20)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model_and_text(request):
    from lanner.default_model import gemma3_path, smollm2_path

    path = smollm2_path() if request.param == "smollm2" else gemma3_path()
    model = core.Model(str(path))
    return model, text_pipeline(model)


def text_pipeline(model):
    """(tokenizer, encode, sampler_factory, detokenizer_factory): the real ones where they exist."""
    from lanner.text.tokenizer import Tokenizer

    tok = Tokenizer.from_metadata(model.metadata)
    try:
        from lanner.engine.sampling import Sampler
    except ImportError:  # not landed yet: greedy stand-in
        from fake_core import FakeSampler as Sampler
    try:
        from lanner.text.detokenizer import Detokenizer
    except ImportError:
        from fake_core import FakeDetokenizer as Detokenizer
    return tok, tok.encode, Sampler, lambda t, stop: Detokenizer(t, stop=stop)


def make(model, text, n_parallel=4, budget=32, n_ctx=512):
    tok, _, sampler, detok = text
    ctx = ProbeContext(core.Context(model, n_ctx=n_ctx, n_batch=512, n_seq_max=8, n_threads=2))
    eng = Engine(ctx, tok, n_parallel=n_parallel, step_token_budget=budget, n_vocab=model.n_vocab,
                 sampler_factory=sampler, detokenizer_factory=detok)
    return eng, ctx


def greedy(p, max_tokens, **kw):
    return GenerateRequest(prompt_tokens=list(p), max_tokens=max_tokens,
                           sampling=SamplingParams(temperature=0.0, logprobs=5), ignore_eos=True, **kw)


def assert_same_events(ref: list[TokenEvent], got: list[TokenEvent]) -> None:
    """Same tokens and the same logprobs (top ones included), bit for bit."""
    assert [(e.token_id, e.logprob, e.top_logprobs) for e in ref] == \
        [(e.token_id, e.logprob, e.top_logprobs) for e in got]


def collect(stream):
    """(token ids, text, FinishEvent, TokenEvents)."""
    evs = [ev for ev in stream if isinstance(ev, TokenEvent)]
    fin = stream.finish
    assert fin.reason != FinishReason.ERROR, fin.error
    return [e.token_id for e in evs], "".join(e.text for e in evs) + fin.text, fin, evs


CONCURRENT_PROMPTS = PROMPTS + [
    "def add(a, b):\n    return",
    "The three primary colors are",
    "Water freezes at a temperature of",
    "My favourite book is",
    "In 1969, the first humans landed on",
]


def test_real_concurrent_equals_one_at_a_time(model_and_text):
    # 8 requests at once (8 parallel sequences, prompts chunked across steps) vs one at a time
    model, text = model_and_text
    prompts = [text[1](p) for p in CONCURRENT_PROMPTS]
    assert len(prompts) == 8
    eng, _ = make(model, text, n_parallel=1)
    try:
        solo = [collect(eng.submit(greedy(p, 8))) for p in prompts]
    finally:
        eng.close()
    eng, ctx = make(model, text, n_parallel=8)
    try:
        streams = [eng.submit(greedy(p, 8)) for p in prompts]
        both = [collect(s) for s in streams]
    finally:
        eng.close()
    for (t1, x1, _, _), (t2, x2, _, _) in zip(solo, both):
        assert t1 == t2 and x1 == x2
    assert max(ctx.decode_calls) <= 32
    assert max(ctx.decode_calls) > 8  # steps really mixed several sequences


def test_real_second_turn_computes_only_new_tokens(model_and_text):
    model, text = model_and_text
    encode = text[1]
    p1 = encode(PROMPTS[2])
    eng, ctx = make(model, text)
    try:
        t1, _, f1, _ = collect(eng.submit(greedy(p1, 6)))
        p2 = p1 + t1 + encode(" and then")[1:]
        n0 = sum(ctx.decode_calls)
        t2, x2, f2, e2 = collect(eng.submit(greedy(p2, 6)))
        assert f2.usage.cached_tokens == len(p1) + len(t1) - 1
        assert sum(ctx.decode_calls) - n0 == len(p2) - f2.usage.cached_tokens + 6 - 1
    finally:
        eng.close()
    cold, ctx2 = make(model, text)
    try:
        tc, xc, fc, ec = collect(cold.submit(greedy(p2, 6)))
    finally:
        cold.close()
    assert fc.usage.cached_tokens == 0
    assert_same_events(ec, e2)  # turn one's cells were reused: the same numbers as cold


def test_real_abort_during_prefill(model_and_text):
    model, text = model_and_text
    encode = text[1]
    pa = encode(PROMPTS[0])
    long = encode(" ".join(PROMPTS * 6))
    assert len(long) > 4 * 32
    eng, ctx = make(model, text, budget=32)
    try:
        ref = collect(eng.submit(greedy(pa, 5)))
        eng._cache.evict_lru()
        assert ctx.n_cells_used() == 0
        ctx.gate = threading.Semaphore(0)
        n0 = ctx.calls_started
        a = eng.submit(greedy(pa, 5))
        r = eng.submit(greedy(long, 5))
        ctx.wait_started(n0 + 1)
        ctx.step(2)
        assert r.get(timeout=0) is None  # still in prefill: the prompt needs 5+ steps of 32 tokens
        r.close()
        ctx.open_gate()
        evs = list(r)
        assert evs[-1].reason == FinishReason.CANCELLED and len(evs) == 1
        got = collect(a)
        assert_same_events(ref[3], got[3])
        # only a's cells remain (the long prompt shares just the BOS with it)
        assert ctx.n_cells_used() == len(pa) + 5 - 1
    finally:
        eng.close()
