"""The engine's admission limit: max_queue counts requests waiting while every slot is busy, so
max_queue=0 means "run now if a slot is free, else OverloadedError (503)", never "reject all"."""

from __future__ import annotations

import threading

import pytest

from fake_core import FakeContext, FakeDetokenizer, FakeModel, FakeSampler, FakeTokenizer
from lanner.engine import Engine
from lanner.types import FinishEvent, FinishReason, GenerateRequest, OverloadedError, SamplingParams

N_VOCAB = 64


@pytest.fixture
def gated_engine():
    made = []

    def factory(n_parallel: int, max_queue: int):
        ctx = FakeContext(FakeModel(N_VOCAB), n_ctx=1024, n_seq_max=8)
        ctx.gate = threading.Semaphore(0)  # the model thread blocks in decode until released
        eng = Engine(ctx, FakeTokenizer(N_VOCAB), n_parallel=n_parallel, max_queue=max_queue,
                     step_token_budget=48, max_step_ms=None, n_vocab=N_VOCAB,
                     sampler_factory=FakeSampler, detokenizer_factory=FakeDetokenizer, clock=ctx.clock)
        made.append((eng, ctx))
        return eng, ctx

    yield factory
    for eng, ctx in made:
        ctx.open_gate()
        eng.close()


def req(n_tokens: int = 5) -> GenerateRequest:
    return GenerateRequest(prompt_tokens=[0, 5, 6, 7], max_tokens=n_tokens,
                           sampling=SamplingParams(temperature=0.0))


def finish(stream) -> FinishEvent:
    while True:
        ev = stream.get(timeout=10)
        assert ev is not None, "stream stalled"
        if isinstance(ev, FinishEvent):
            return ev


def test_max_queue_0_runs_on_a_free_slot_and_rejects_when_busy(gated_engine):
    eng, ctx = gated_engine(n_parallel=1, max_queue=0)
    a = eng.submit(req())  # idle: accepted
    ctx.wait_started(1)    # ... and running
    with pytest.raises(OverloadedError):
        eng.submit(req())  # the one slot is busy and nobody may wait
    ctx.open_gate()
    assert finish(a).reason == FinishReason.LENGTH
    assert finish(eng.submit(req())).reason == FinishReason.LENGTH  # idle again: accepted


def test_max_queue_counts_only_requests_beyond_the_free_slots(gated_engine):
    # submitted back to back, before or after the model thread admits them: two free slots
    # take two requests whatever the timing; the third finds no slot and no queue
    eng, ctx = gated_engine(n_parallel=2, max_queue=0)
    a, b = eng.submit(req()), eng.submit(req())
    with pytest.raises(OverloadedError):
        eng.submit(req())
    eng2, ctx2 = gated_engine(n_parallel=1, max_queue=2)  # one running + two waiting, then full
    eng2.submit(req())
    ctx2.wait_started(1)
    eng2.submit(req()), eng2.submit(req())
    with pytest.raises(OverloadedError):
        eng2.submit(req())
    assert eng2.stats().pending == 2
    ctx.open_gate()
    assert finish(a).reason == finish(b).reason == FinishReason.LENGTH
