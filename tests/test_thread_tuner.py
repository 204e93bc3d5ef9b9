"""The engine's thread count chosen by measured step times (lanner/engine/thread_tuner.py).

The tuner is fed simulated decode steps whose time depends on the thread count it set (as on
a machine where other processes hold the cores, or not): it must settle on the faster count,
back off its probes when they lose, probe at once when the current count slows down, and
ignore prompt steps. The premise, that the count never changes a result, is checked on both
real models by switching it between steps of one sequence.
"""

from __future__ import annotations

import numpy as np
import pytest

from lanner.engine.thread_tuner import FIRST_PERIOD, ThreadTuner, thread_counts, tuner_for


class _Machine:
    """Step times per thread count (ms), changeable to simulate load arriving."""

    def __init__(self, ms: dict[int, float]):
        self.ms = dict(ms)
        self.threads = max(ms)
        self.history: list[int] = []

    def apply(self, n: int) -> None:
        self.threads = n
        self.history.append(n)

    def run(self, tuner: ThreadTuner, steps: int, n_tokens: int = 4) -> None:
        for i in range(steps):
            jitter = 1.0 + 0.02 * ((i * 7) % 5 - 2)  # +-4%
            tuner.observe(n_tokens, 0, self.ms[self.threads] * 1e6 * jitter)


def test_counts_tried():
    assert thread_counts(1) == [1]
    assert thread_counts(2) == [2, 1]
    assert thread_counts(8) == [8, 4, 1]


def test_it_keeps_all_threads_when_they_are_faster_and_probes_less_and_less():
    m = _Machine({2: 20.0, 1: 36.0})
    t = ThreadTuner(2, m.apply)
    m.run(t, 2000)
    assert t.current == 2 and t.switches == 0
    probes = m.history.count(1)
    assert 3 <= probes <= 7, m.history  # 32, 64, 128, ... steps apart
    # time spent at the slower count: a few probe steps out of 2000
    assert probes * 6 / 2000 < 0.03


def test_it_moves_to_one_thread_when_that_is_faster():
    m = _Machine({2: 90.0, 1: 35.0})  # a busy machine: the spinning barrier collapses
    t = ThreadTuner(2, m.apply)
    m.run(t, FIRST_PERIOD + 20)
    assert t.current == 1 and t.switches == 1


def test_load_arriving_triggers_a_probe_before_the_period_ends():
    m = _Machine({2: 20.0, 1: 36.0})
    t = ThreadTuner(2, m.apply)
    m.run(t, 1000)  # long quiet phase: the period has grown to hundreds of steps
    assert t.current == 2
    m.ms = {2: 80.0, 1: 38.0}  # another process takes a core
    m.run(t, 30)
    assert t.current == 1
    m.ms = {2: 20.0, 1: 36.0}  # it leaves: a later probe of 2 threads wins again
    m.run(t, 200)
    assert t.current == 2 and t.switches == 2


def test_prompt_steps_are_not_compared():
    m = _Machine({2: 90.0, 1: 35.0})
    t = ThreadTuner(2, m.apply)
    for _ in range(500):
        t.observe(300, 296, 1e9)
    assert t.current == 2 and m.history == []


def test_one_thread_needs_no_tuner():
    class Ctx:
        n_threads = 1

    assert tuner_for(Ctx(), 1) is None
    ctx = Ctx()
    t = tuner_for(ctx, 2)
    t._set(1)
    assert ctx.n_threads == 1


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_the_thread_count_never_changes_a_result(which):
    import lanner._core as core
    from lanner.default_model import gemma3_path, smollm2_path

    model = core.Model(str(smollm2_path() if which == "smollm2" else gemma3_path()))

    def run(counts):
        c = core.Context(model, n_ctx=256, n_batch=64, n_seq_max=2, n_threads=1)
        rng = np.random.default_rng(3)
        out = []
        for i, n in enumerate((70, 15)):  # two prompts (64-token chunks), then batched steps
            c.n_threads = counts[i % len(counts)]
            out.append(c.decode(rng.integers(10, 20000, n).astype(np.int32), np.arange(n, dtype=np.int32),
                                np.full(n, i, np.int32), np.ones(n, np.uint8)).copy())
        for k in range(4):
            c.n_threads = counts[k % len(counts)]
            out.append(c.decode(rng.integers(10, 20000, 2).astype(np.int32), np.array([70 + k, 15 + k], np.int32),
                                np.array([0, 1], np.int32), np.ones(2, np.uint8)).copy())
        return out

    for a, b in zip(run([1]), run([2, 1, 3])):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_llm_tunes_threads_only_when_they_are_not_pinned(monkeypatch):
    import lanner.llm as llm_mod
    from lanner import LLM

    monkeypatch.setattr(llm_mod, "_default_threads", lambda: 2)
    free = LLM(n_ctx=256, n_parallel=1)
    pinned = LLM(n_ctx=256, n_parallel=1, n_threads=2)
    try:
        assert isinstance(free.engine._threads, ThreadTuner) and free.engine._threads.counts == [2, 1]
        assert pinned.engine._threads is None
        assert free.generate("Hi", max_tokens=4, temperature=0).text == \
            pinned.generate("Hi", max_tokens=4, temperature=0).text
    finally:
        free.close()
        pinned.close()
