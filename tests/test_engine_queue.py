"""The engine's admission limit: max_queue counts requests waiting while every slot is busy, so
max_queue=0 means "run now if a slot is free, else OverloadedError (503)", never "reject all".
Also: waiting requests that ask are told their place (QueuedEvent), and an abort during a long
prefill takes effect between chunks."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from fake_core import FakeContext, FakeDetokenizer, FakeModel, FakeSampler, FakeTokenizer
from lanner.engine import Engine
from lanner.types import (FinishEvent, FinishReason, GenerateRequest, OverloadedError, QueuedEvent,
                          SamplingParams, TokenEvent)

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


# ---- queue positions (QueuedEvent, for requests that ask: the web UI's queue frames) ----

def drain(stream) -> list:
    """Every event up to and including the FinishEvent."""
    events = []
    while not events or not isinstance(events[-1], FinishEvent):
        events.append(stream.get(timeout=10))
        assert events[-1] is not None, "stream stalled"
    return events


def queued_events(stream, n: int) -> list[QueuedEvent]:
    out = []
    for _ in range(n):
        ev = stream.get(timeout=10)
        assert isinstance(ev, QueuedEvent), ev
        out.append((ev.position, ev.pending))
    return out


def test_waiting_requests_that_ask_are_told_their_place_as_it_changes(gated_engine):
    eng, ctx = gated_engine(n_parallel=1, max_queue=4)
    a = eng.submit(req())
    ctx.wait_started(1)
    b = eng.submit(dataclasses.replace(req(), report_queue=True))
    c = eng.submit(req())                                           # does not ask
    d = eng.submit(dataclasses.replace(req(), report_queue=True))
    assert queued_events(b, 1) == [(1, 1)]                          # first in line
    assert queued_events(d, 1) == [(3, 3)]
    eng.abort(b.id)                                                 # d moves up to 2
    assert finish(b).reason == FinishReason.CANCELLED
    assert queued_events(d, 1) == [(2, 2)]
    ctx.open_gate()  # a ends, c runs (d -> 1 of 1), c ends, d runs
    a_events, c_events, d_events = drain(a), drain(c), drain(d)
    assert a_events[-1].reason == c_events[-1].reason == d_events[-1].reason == FinishReason.LENGTH
    assert [(e.position, e.pending) for e in d_events if isinstance(e, QueuedEvent)] == [(1, 1)]
    assert sum(isinstance(e, TokenEvent) for e in d_events) == 5    # then it generates as usual
    assert not any(isinstance(e, QueuedEvent) for e in a_events + c_events)  # they did not ask


def test_a_request_that_gets_a_free_slot_is_not_told_it_queues(gated_engine):
    eng, ctx = gated_engine(n_parallel=2, max_queue=4)
    a = eng.submit(dataclasses.replace(req(), report_queue=True))
    ctx.open_gate()
    first = a.get(timeout=10)
    assert isinstance(first, TokenEvent), first
    assert finish(a).reason == FinishReason.LENGTH


# ---- cancelling a long prefill (hardening: a client that leaves mid-prompt frees its slot) ----

def test_abort_during_a_long_prefill_stops_between_chunks(gated_engine):
    eng, ctx = gated_engine(n_parallel=2, max_queue=4)   # step budget 48 tokens
    prompt = [0] + [2 + i % 60 for i in range(999)]       # 1,000 tokens: ~21 chunks
    s = eng.submit(GenerateRequest(prompt_tokens=prompt, max_tokens=8,
                                   sampling=SamplingParams(temperature=0.0)))
    ctx.wait_started(1)
    ctx.step(2)                          # two chunks done, the third is at the gate
    assert s.get(timeout=0.05) is None   # still prefilling: nothing generated
    eng.abort(s.id)
    ctx.open_gate()
    ev = finish(s)
    assert ev.reason == FinishReason.CANCELLED and ev.usage.completion_tokens == 0
    assert ctx.calls_started <= 4, ctx.calls_started  # not the ~21 a whole prefill takes
    assert eng.stats().running == 0 and ctx.n_cells_used() < 48 * 4
    b = eng.submit(req())                # the slot and its cells serve the next request
    assert finish(b).reason == FinishReason.LENGTH
