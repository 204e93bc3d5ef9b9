"""Engine tests on the fake core: batching == solo, prefix reuse, cancellation, limits, stops.

All greedy and deterministic; the fake context's logits are a hash of each sequence's visible
history, so any mix-up of positions, sequences or reused cells changes the generated tokens.
Gated tests step the model thread one decode call at a time (FakeContext.gate).
"""

from __future__ import annotations

import random
import threading

import pytest

from fake_core import FakeContext, FakeDetokenizer, FakeModel, FakeSampler, FakeTokenizer
from lanner.engine import Engine
from lanner.engine.engine import MIN_PROMPT_CHUNK
from lanner.types import (
    ContextOverflowError,
    FinishEvent,
    FinishReason,
    GenerateRequest,
    OverloadedError,
    SamplingParams,
    TokenEvent,
)

N_VOCAB = 64
GREEDY = SamplingParams(temperature=0.0)


def make(n_ctx=2048, n_parallel=4, n_seq_max=8, budget=48, max_queue=64, gated=False,
         max_step_ms=None, ns_per_token=0, min_prompt_chunk=MIN_PROMPT_CHUNK):
    ctx = FakeContext(FakeModel(N_VOCAB), n_ctx=n_ctx, n_seq_max=n_seq_max, ns_per_token=ns_per_token)
    if gated:
        ctx.gate = threading.Semaphore(0)
    eng = Engine(ctx, FakeTokenizer(N_VOCAB), n_parallel=n_parallel, max_queue=max_queue,
                 step_token_budget=budget, max_step_ms=max_step_ms, n_vocab=N_VOCAB,
                 min_prompt_chunk=min_prompt_chunk,
                 sampler_factory=FakeSampler, detokenizer_factory=FakeDetokenizer, clock=ctx.clock)
    return eng, ctx


@pytest.fixture
def engines():
    made = []

    def factory(**kw):
        eng, ctx = make(**kw)
        made.append((eng, ctx))
        return eng, ctx

    yield factory
    for eng, ctx in made:
        ctx.open_gate()
        eng.close()


def req(prompt, max_tokens=24, **kw):
    kw.setdefault("sampling", SamplingParams(temperature=0.0))
    return GenerateRequest(prompt_tokens=list(prompt), max_tokens=max_tokens, **kw)


def collect(stream, timeout=10.0, ok=True):
    """(token ids, text, FinishEvent) of a whole stream; ok: it must not end in an error."""
    toks, text = [], []
    while True:
        ev = stream.get(timeout=timeout)
        assert ev is not None, "stream stalled"
        if isinstance(ev, FinishEvent):
            assert not ok or ev.reason != FinishReason.ERROR, ev.error
            text.append(ev.text)
            return toks, "".join(text), ev
        assert isinstance(ev, TokenEvent)
        toks.append(ev.token_id)
        text.append(ev.text)


def prompt(rng, n):
    return [0] + [rng.randrange(2, N_VOCAB) for _ in range(n - 1)]


def solo(p, max_tokens=24, **kw):
    eng, _ = make()
    try:
        return collect(eng.submit(req(p, max_tokens, **kw)))
    finally:
        eng.close()


# ---------------------------------------------------------------- batching

@pytest.mark.parametrize("n_parallel", [4, 8])
def test_concurrent_equals_solo(engines, n_parallel):
    rng = random.Random(1)
    system = prompt(rng, 40)
    prompts = [system + prompt(rng, n)[1:] if i % 3 == 0 else prompt(rng, n)
               for i, n in enumerate([5, 17, 90, 33, 120, 8, 61, 45])]
    want = [solo(p, 30) for p in prompts]

    eng, ctx = engines(n_parallel=n_parallel, budget=48)
    streams = [eng.submit(req(p, 30)) for p in prompts]
    got = [collect(s) for s in streams]
    for (t1, x1, f1), (t2, x2, f2) in zip(got, want):
        assert t1 == t2 and x1 == x2 and f1.reason == f2.reason
        assert f1.usage.completion_tokens == len(t1)
    # steps really mixed generation tokens of one sequence with prompt chunks of another
    mixed = [log for log in ctx.decode_log if len(set(log[2].tolist())) > 1 and len(log[0]) > len(set(log[2].tolist()))]
    assert mixed
    assert max(ctx.decode_calls) <= 48  # the step budget bounds every batch
    st = eng.stats()
    assert st.total_processed == 8 and not st.busy and st.running == 0 and st.pending == 0
    assert st.total_completion_tokens == sum(len(t) for t, _, _ in got)
    assert st.kv_cells_used == ctx.n_cells_used()


def test_long_prompt_is_chunked_and_does_not_stall_a_running_stream(engines):
    rng = random.Random(2)
    eng, ctx = engines(n_parallel=2, budget=32, gated=True)
    a = eng.submit(req(prompt(rng, 10), max_tokens=60, ignore_eos=True))
    ctx.wait_started(1)
    ctx.step(2)  # a: prefill, first decode
    b = eng.submit(req(prompt(rng, 300), max_tokens=4, ignore_eos=True))
    ctx.open_gate()
    collect(a), collect(b)
    seq_a = ctx.decode_log[0][2][0]
    # every step while b's prompt was being prefilled also carried a's next token
    b_steps = [log for log in ctx.decode_log if (log[2] != seq_a).any()]
    assert len(b_steps) >= 300 // 32
    for toks, pos, seqs in b_steps[: 300 // 32]:
        assert (seqs == seq_a).sum() == 1 and len(toks) <= 32


def test_prompt_chunks_shrink_to_keep_steps_short_while_streams_generate(engines):
    # simulated 10 ms per batch token and a 250 ms step target: chunks of 25 tokens while a
    # generates; once only b is left, its prompt goes at the full budget of 200
    # (min_prompt_chunk 16: below the 24 prompt tokens the target leaves room for)
    rng = random.Random(19)
    eng2, ctx2 = engines(n_parallel=2, budget=200, max_step_ms=250, ns_per_token=10_000_000, gated=True,
                         min_prompt_chunk=16)
    a = eng2.submit(req(prompt(rng, 40), max_tokens=6, ignore_eos=True))
    ctx2.wait_started(1)
    ctx2.step(2)
    b = eng2.submit(req(prompt(rng, 600), max_tokens=2, ignore_eos=True))
    ctx2.open_gate()
    collect(a), collect(b)
    sizes = ctx2.decode_calls
    assert sizes[0] == 40                   # a's prompt alone: nothing else generating
    mixed = [n for n, log in zip(sizes, ctx2.decode_log) if len(set(log[2].tolist())) == 2]
    assert mixed and max(mixed) <= 25       # 250 ms / 10 ms per token
    assert 200 in sizes                     # b alone: the whole budget again
    assert eng2.stats().total_processed == 2


def test_a_short_prompt_goes_in_one_step_even_past_the_step_target(engines):
    # 10 ms per batch token, 250 ms target: only 24 prompt tokens "fit", but a prompt up to
    # min_prompt_chunk (default 128) is taken whole, so its first token comes after one step
    rng = random.Random(21)
    eng, ctx = engines(n_parallel=2, budget=200, max_step_ms=250, ns_per_token=10_000_000, gated=True)
    a = eng.submit(req(prompt(rng, 40), max_tokens=6, ignore_eos=True))
    ctx.wait_started(1)
    ctx.step(2)
    b = eng.submit(req(prompt(rng, 100), max_tokens=2, ignore_eos=True))
    ctx.open_gate()
    collect(a), collect(b)
    mixed = [n for n, log in zip(ctx.decode_calls, ctx.decode_log) if len(set(log[2].tolist())) == 2]
    # a's next token + b's whole prompt (less its first token, a prefix-cache hit on a's cells)
    assert mixed[0] >= 100
    seq_a = ctx.decode_log[0][2][0]
    assert sum(1 for log in ctx.decode_log if (log[2] != seq_a).sum() > 1) == 1  # b prefilled once
    assert MIN_PROMPT_CHUNK >= 100


def test_timings_follow_the_clock(engines):
    eng, ctx = engines(ns_per_token=1_000_000)  # simulated: 1 ms per batch token
    f = collect(eng.submit(req(prompt(random.Random(20), 40), max_tokens=5, ignore_eos=True)))[2]
    t = f.timings
    assert t.prompt_eval_ns >= 40_000_000 and 4_000_000 <= t.eval_ns < 5_000_000 + 1000
    assert t.total_ns == t.queue_ns + t.prompt_eval_ns + t.eval_ns
    assert f.usage.prompt_tokens == 40 and f.usage.completion_tokens == 5


# ---------------------------------------------------------------- prefix cache

def test_two_turn_conversation_reuses_turn_one(engines):
    rng = random.Random(3)
    p1 = prompt(rng, 100)
    eng, ctx = engines()
    t1, _, f1 = collect(eng.submit(req(p1, 20, ignore_eos=True)))
    assert f1.reason == FinishReason.LENGTH and f1.usage.cached_tokens == 0
    p2 = p1 + t1 + [1] + prompt(rng, 30)[1:]
    n_before = sum(ctx.decode_calls)
    t2, x2, f2 = collect(eng.submit(req(p2, 10, ignore_eos=True)))
    # turn 1 left p1 + t1[:-1] in cells (its last sampled token was never decoded)
    assert f2.usage.cached_tokens == len(p1) + len(t1) - 1
    assert sum(ctx.decode_calls) - n_before == (len(p2) - f2.usage.cached_tokens) + (10 - 1)
    assert (t2, x2) == solo(p2, 10, ignore_eos=True)[:2]
    assert eng.stats().total_cached_tokens == f2.usage.cached_tokens


def test_whole_prompt_cached_recomputes_last_token(engines):
    rng = random.Random(4)
    p = prompt(rng, 50)
    eng, ctx = engines()
    first = collect(eng.submit(req(p, 1)))
    n_before = sum(ctx.decode_calls)
    again = collect(eng.submit(req(p, 1)))
    assert again[2].usage.cached_tokens == len(p) - 1
    assert sum(ctx.decode_calls) - n_before == 1
    assert again[:2] == first[:2]


def test_shared_prefix_between_concurrent_requests_uses_seq_cp(engines):
    rng = random.Random(5)
    system = prompt(rng, 60)
    pa, pb = system + prompt(rng, 10)[1:], system + prompt(rng, 12)[1:]
    eng, ctx = engines(gated=True)
    a = eng.submit(req(pa, 40, ignore_eos=True))
    ctx.wait_started(1)
    ctx.step(3)  # a: prefill (48 + 21 tokens) + first decode; a keeps running
    b = eng.submit(req(pb, 5, ignore_eos=True))
    ctx.step(2)  # the step in flight, then one with b's uncached prompt tokens next to a's token
    seq_a = seq_of(ctx, pa, 0)
    seq_b = seq_of(ctx, pb, len(system))
    assert seq_a != seq_b
    toks, pos, seqs = ctx.decode_log[-1]
    assert (seqs == seq_a).sum() == 1 and (seqs == seq_b).sum() == len(pb) - len(system)
    ctx.open_gate()
    ta, tb = collect(a), collect(b)
    assert tb[2].usage.cached_tokens == len(system)
    assert ta[:2] == solo(pa, 40, ignore_eos=True)[:2]
    assert tb[:2] == solo(pb, 5, ignore_eos=True)[:2]
    b_tokens = sum(int((log[2] == seq_b).sum()) for log in ctx.decode_log)
    assert b_tokens == len(pb) - len(system) + 5 - 1


def seq_of(ctx, p, i):
    """Sequence id that decoded prompt token p[i] at position i."""
    for toks, pos, seqs in ctx.decode_log:
        hit = (pos == i) & (toks == p[i])
        if hit.any():
            return int(seqs[hit][0])
    raise AssertionError("never decoded")


def test_shared_cells_are_not_duplicated(engines):
    rng = random.Random(6)
    system = prompt(rng, 200)
    eng, ctx = engines()
    collect(eng.submit(req(system + [5, 6], 1)))
    used = ctx.n_cells_used()
    collect(eng.submit(req(system + [7, 8, 9], 1)))
    # the second request reused 200 shared cells and added 3 (+0 generated decoded)
    assert ctx.n_cells_used() == used + 3


def test_session_id_prefers_its_own_sequence(engines):
    rng = random.Random(7)
    system = prompt(rng, 30)
    eng, ctx = engines()
    a1 = system + prompt(rng, 20)[1:]
    ta, _, _ = collect(eng.submit(req(a1, 6, ignore_eos=True, session_id="alice")))
    b1 = system + prompt(rng, 25)[1:]
    collect(eng.submit(req(b1, 6, ignore_eos=True)))
    a2 = a1 + ta + prompt(rng, 10)[1:]
    t, x, f = collect(eng.submit(req(a2, 6, ignore_eos=True, session_id="alice")))
    assert f.usage.cached_tokens == len(a1) + len(ta) - 1
    assert (t, x) == solo(a2, 6, ignore_eos=True)[:2]
    # an edited conversation (regenerate from the middle) takes alice's sequence over
    a3 = a1[:25] + prompt(rng, 5)[1:]
    used = ctx.n_cells_used()
    t, x, f = collect(eng.submit(req(a3, 3, ignore_eos=True, session_id="alice")))
    assert f.usage.cached_tokens == 25
    assert (t, x) == solo(a3, 3, ignore_eos=True)[:2]
    assert ctx.n_cells_used() < used  # the old branch was dropped, not kept next to the new one


def test_lru_eviction_when_sequences_run_out(engines):
    rng = random.Random(8)
    eng, ctx = engines(n_seq_max=3, n_parallel=2)
    ps = [prompt(rng, 20) for _ in range(5)]
    for p in ps:
        collect(eng.submit(req(p, 4)))
    # only the 3 most recent conversations are still cached; older ones share just the BOS
    for p, cached in ((ps[4][:19], 18), (ps[0][:19], 1)):
        t, x, f = collect(eng.submit(req(p, 2)))
        assert f.usage.cached_tokens == cached
        assert (t, x) == solo(p, 2)[:2]


def test_cells_run_out_evicts_idle_sequences(engines):
    rng = random.Random(9)
    eng, ctx = engines(n_ctx=256, n_seq_max=8)
    outs = []
    for _ in range(6):
        p = prompt(rng, 100)
        outs.append((p, collect(eng.submit(req(p, 10, ignore_eos=True)))))
    for p, (t, x, f) in outs[-2:]:
        assert (t, x) == solo(p, 10, ignore_eos=True)[:2]
    assert ctx.n_cells_used() <= 256


def test_context_full_finishes_the_longest_with_length(engines):
    rng = random.Random(10)
    eng, ctx = engines(n_ctx=128, n_parallel=2, budget=32)
    pa, pb = prompt(rng, 20), prompt(rng, 20)
    a = eng.submit(req(pa, 100, ignore_eos=True))
    b = eng.submit(req(pb, 100, ignore_eos=True))
    ra, rb = collect(a), collect(b)
    lens = sorted([len(ra[0]), len(rb[0])])
    assert lens[1] == 100 and lens[0] < 100
    for (t, x, f), p in ((ra, pa), (rb, pb)):
        assert f.reason == FinishReason.LENGTH
        full = solo(p, 100, ignore_eos=True)[0]
        assert t == full[: len(t)]


# ---------------------------------------------------------------- cancellation

def test_abort_while_queued(engines):
    rng = random.Random(11)
    pa = prompt(rng, 20)
    eng, ctx = engines(n_parallel=1, gated=True)
    a = eng.submit(req(pa, 10, ignore_eos=True))
    ctx.wait_started(1)
    b = eng.submit(req(prompt(rng, 20), 10))
    assert eng.stats().pending == 1
    b.close()
    tb, _, fb = collect(b, timeout=1)
    assert fb.reason == FinishReason.CANCELLED and tb == [] and fb.usage.completion_tokens == 0
    assert eng.stats().pending == 0
    ctx.open_gate()
    assert collect(a)[:2] == solo(pa, 10, ignore_eos=True)[:2]
    assert not eng.abort(b.id) and not eng.abort(a.id)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_abort_running_frees_cells_and_spares_others(engines, phase):
    rng = random.Random(12)
    warm = prompt(rng, 30)
    pa = prompt(rng, 25)
    pr = warm[:12] + prompt(rng, 200)[1:]   # shares 12 tokens with the warm conversation
    assert pr[12] != warm[12]
    eng, ctx = engines(budget=40, gated=True)
    ctx.open_gate()
    collect(eng.submit(req(warm, 5, ignore_eos=True)))
    base = ctx.n_cells_used()
    ctx.gate = threading.Semaphore(0)
    n0 = ctx.calls_started
    a = eng.submit(req(pa, 30, ignore_eos=True))
    r = eng.submit(req(pr, 30, ignore_eos=True))
    ctx.wait_started(n0 + 1)
    if phase == "prefill":
        ctx.step(2)  # r's 199 uncached prompt tokens need 5+ steps of 40
        assert r.get(timeout=0.01) is None
    else:
        for _ in range(20):
            ctx.step(1)
            if r.get(timeout=0.01) is not None:
                break
        else:
            raise AssertionError("r never produced a token")
    seq_r = seq_of(ctx, pr, 12)
    r.close()
    ctx.step(2)  # the step in flight, then the first one built after the abort
    assert seq_r not in ctx.decode_log[-1][2].tolist()
    ev = None
    while not isinstance(ev, FinishEvent):
        ev = r.get(timeout=2)
        assert ev is not None
    assert ev.reason == FinishReason.CANCELLED and ev.usage.cached_tokens == 12
    assert (ev.usage.completion_tokens > 0) == (phase == "decode")
    ctx.open_gate()
    ta = collect(a)
    assert ta[:2] == solo(pa, 30, ignore_eos=True)[:2]
    # r's cells are gone: what is left is the warm conversation plus a's
    assert ctx.n_cells_used() == base + len(pa) - ta[2].usage.cached_tokens + 30 - 1
    assert eng.stats().total_processed == 3


def test_close_cancels_everything(engines):
    rng = random.Random(13)
    eng, ctx = engines(n_parallel=1, gated=True)
    a = eng.submit(req(prompt(rng, 20), 10))
    ctx.wait_started(1)
    b = eng.submit(req(prompt(rng, 20), 10))
    threading.Timer(0.05, ctx.open_gate).start()
    eng.close()
    assert collect(a)[2].reason == FinishReason.CANCELLED
    assert collect(b)[2].reason == FinishReason.CANCELLED
    with pytest.raises(RuntimeError):
        eng.submit(req([0, 5], 2))


# ---------------------------------------------------------------- limits

def test_queue_full_raises_at_once(engines):
    rng = random.Random(14)
    eng, ctx = engines(n_parallel=1, max_queue=2, gated=True)
    eng.submit(req(prompt(rng, 10), 5))
    ctx.wait_started(1)
    eng.submit(req(prompt(rng, 10), 5))
    eng.submit(req(prompt(rng, 10), 5))
    with pytest.raises(OverloadedError):
        eng.submit(req(prompt(rng, 10), 5))
    st = eng.stats()
    assert st.pending == 2 and st.running == 1 and st.busy


def test_context_overflow_raises_with_numbers(engines):
    eng, _ = engines(n_ctx=256)
    with pytest.raises(ContextOverflowError) as e:
        eng.submit(req([0] * 200, 100))
    assert (e.value.n_prompt, e.value.max_tokens, e.value.n_ctx) == (200, 100, 256)
    assert "200" in str(e.value) and "100" in str(e.value) and "256" in str(e.value)
    collect(eng.submit(req([0] + [5] * 199, 56)))  # exactly fits


def test_bad_requests(engines):
    eng, _ = engines()
    with pytest.raises(ValueError):
        eng.submit(req([], 5))
    with pytest.raises(ValueError):
        eng.submit(req([0, N_VOCAB], 5))
    t, x, f = collect(eng.submit(req([0, 5], 0)))
    assert t == [] and f.reason == FinishReason.LENGTH


# ---------------------------------------------------------------- stops and logprobs

def test_eog_stops_without_text_and_ignore_eos_continues(engines):
    rng = random.Random(15)
    for _ in range(200):  # find a prompt whose greedy run hits the EOG token (id 1)
        p = prompt(rng, 8)
        t, x, f = solo(p, 40)
        if f.reason == FinishReason.STOP:
            break
    else:
        pytest.skip("no EOG in 200 tries")
    assert 1 not in t
    eng, _ = engines()
    t2, _, f2 = collect(eng.submit(req(p, len(t) + 3, ignore_eos=True)))
    assert f2.reason == FinishReason.LENGTH and t2[: len(t)] == t and t2[len(t)] == 1


def test_stop_string_and_logprobs(engines):
    rng = random.Random(16)
    p = prompt(rng, 12)
    t, x, f = solo(p, 20, ignore_eos=True)
    j = next(i for i in range(4, 20) if t[i] > 1)
    stop = f"<{t[j]}>"
    k = t.index(t[j])
    eng, _ = engines()
    sp = SamplingParams(temperature=0.0, logprobs=3)
    s = eng.submit(GenerateRequest(prompt_tokens=p, max_tokens=20, sampling=sp, stop=[stop], ignore_eos=True))
    evs = list(s)
    fin = evs[-1]
    assert fin.reason == FinishReason.STOP
    text = "".join(e.text for e in evs[:-1]) + fin.text
    assert text == x[: x.index(stop)] and stop not in text
    assert len(evs) - 1 == k + 1
    for e in evs[:-1]:
        assert e.logprob is not None and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token_id == e.token_id  # greedy picks the top one
        assert e.top_logprobs[0].text == f"<{e.token_id}>" or e.token_id in (0, 1)


# ---------------------------------------------------------------- robustness

def test_decode_failure_fails_running_requests_and_recovers(engines):
    rng = random.Random(17)
    eng, ctx = engines(gated=True)
    a = eng.submit(req(prompt(rng, 10), 10))
    ctx.wait_started(1)
    ctx.fail_next = ValueError("boom")
    ctx.open_gate()
    t, x, f = collect(a, ok=False)
    assert f.reason == FinishReason.ERROR and "boom" in f.error
    p = prompt(rng, 10)
    assert collect(eng.submit(req(p, 5)))[:2] == solo(p, 5)[:2]


def test_graph_failure_ends_only_the_failing_request(engines):
    """A DecodeError (graph compute failed after placing cells) in a step of two requests: the
    request whose own decode keeps failing ends with an error and its new cells are freed; the
    other finishes exactly as alone; the engine serves the next request."""
    rng = random.Random(19)
    eng, ctx = engines(gated=True)
    pa, pb = prompt(rng, 12), prompt(rng, 9)
    a = eng.submit(req(pa, 12))
    b = eng.submit(req(pb, 12))
    ctx.wait_started(1)
    ctx.step(3)  # both admitted and generating
    seq_b = next(s.seq_id for s in eng._running if s.req.id == b.id)
    ctx.fail_seq = seq_b
    ctx.open_gate()
    _, _, fb = collect(b, ok=False)
    assert fb.reason == FinishReason.ERROR and "graph compute failed" in fb.error
    assert collect(a)[:2] == solo(pa, 12)[:2]
    ctx.fail_seq = None
    assert ctx.seq_pos_max(seq_b) < len(pb)  # only the reused prefix (if any) is left of b
    pc = prompt(rng, 10)
    assert collect(eng.submit(req(pc, 5)))[:2] == solo(pc, 5)[:2]


def test_graph_failure_of_a_lone_request(engines):
    rng = random.Random(20)
    eng, ctx = engines()
    ctx.fail_seq = 0
    _, _, f = collect(eng.submit(req(prompt(rng, 10), 5)), ok=False)
    assert f.reason == FinishReason.ERROR and ctx.n_cells_used() == 0
    ctx.fail_seq = None
    p = prompt(rng, 10)
    assert collect(eng.submit(req(p, 5)))[:2] == solo(p, 5)[:2]


def test_long_running_engine_does_not_grow(engines):
    rng = random.Random(18)
    eng, ctx = engines(n_ctx=512, n_parallel=4, n_seq_max=6)
    for round_ in range(10):
        streams = [eng.submit(req(prompt(rng, rng.randrange(5, 60)), 8)) for _ in range(8)]
        for s in streams:
            collect(s)
    assert ctx.n_cells_used() <= 512
    assert not eng._waiting_by_id and not eng._running_ids and not eng._running
    assert len(eng._cache.entries) == 6 and len(eng._cache._sessions) == 0
    assert eng.stats().total_processed == 80
