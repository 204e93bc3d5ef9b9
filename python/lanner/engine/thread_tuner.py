"""How many CPU threads the model runs with, chosen by the step times it measures.

Owns: the thread count of a context whose threads were not pinned by the user. ggml's CPU
threads meet at a spinning barrier after every graph node; when other processes hold the cores,
a thread waits for a descheduled peer while spinning on the core that peer needs, and a step
with N threads can take several times as long as with one (bench/README.md measures it). So
the tuner compares, on decode-only steps of the same size, the median step time of the current
count with a short probe of another count, and keeps the faster one. Probes come after a
period that doubles each time a probe loses (32 -> 2048 decode steps), and at once when the
current count's recent steps run 1.4x slower than the best it has shown (load arrived). The
thread count never changes a result: every op gives the same bits at any count
(tests/test_thread_tuner.py checks it on the real models).
Must not: change anything but the context's n_threads.
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from typing import Any, Callable, Optional

FIRST_PERIOD = 32      # decode-only steps before the first probe
MAX_PERIOD = 2048      # the longest wait between probes
PROBE_STEPS = 6        # decode-only steps of the same size measured at the probed count
MIN_GAIN = 0.92        # a probe wins when its median is below MIN_GAIN x the current one
SLOWDOWN = 1.4         # recent median over the best seen that calls a probe at once
RECENT = 8             # steps per median


def thread_counts(max_threads: int) -> list[int]:
    """The counts tried: all the threads, half of them, one."""
    return sorted({max_threads, max(1, max_threads // 2), 1}, reverse=True)


class ThreadTuner:
    """observe() each decode step; it sets `apply(n)` when the count should change."""

    def __init__(self, max_threads: int, apply: Callable[[int], None]):
        self.counts = thread_counts(max(1, int(max_threads)))
        self._apply = apply
        self.current = self.counts[0]  # what the context runs with now
        self._settled = self.current   # the count kept between probes
        self._period = FIRST_PERIOD
        self._since_probe = 0
        self._probe: Optional[int] = None  # the count being probed
        self._probe_left = 0
        self._next = 1                 # index into counts of the next count to probe
        self._times: dict[int, dict[int, deque]] = defaultdict(lambda: defaultdict(lambda: deque(maxlen=RECENT)))
        self._best: dict[tuple[int, int], float] = {}  # (count, size) -> best median seen
        self.switches = 0              # times the settled count changed

    @property
    def active(self) -> bool:
        return len(self.counts) > 1

    def observe(self, n_tokens: int, n_prefill: int, ns: float) -> None:
        """One decoded step: n_tokens rows, n_prefill of them prompt tokens, `ns` long."""
        if not self.active or n_prefill or n_tokens <= 0:
            return  # only decode-only steps compare like with like
        window = self._times[self.current][n_tokens]
        window.append(float(ns))
        if self._probe is not None:
            self._probe_left -= 1
            if self._probe_left <= 0:
                self._end_probe(n_tokens)
            return
        self._since_probe += 1
        if len(window) >= RECENT // 2:
            med = statistics.median(window)
            key = (self.current, n_tokens)
            best = self._best.get(key)
            if len(window) == RECENT:
                self._best[key] = med if best is None else min(best, med)
            if best is not None and med > SLOWDOWN * best:
                self._since_probe = self._period  # load came: look for a better count now
        if self._since_probe >= self._period and len(window) >= RECENT // 2:
            self._start_probe()

    def _start_probe(self) -> None:
        others = [c for c in self.counts if c != self._settled]
        self._probe = others[(self._next - 1) % len(others)]
        self._next += 1
        self._probe_left = PROBE_STEPS
        self._times[self._probe].clear()  # old samples were taken under other conditions
        self._set(self._probe)

    def _end_probe(self, n_tokens: int) -> None:
        probe, settled = self._probe, self._settled
        self._probe, self._since_probe = None, 0
        ours = self._times[settled].get(n_tokens)
        theirs = self._times[probe].get(n_tokens)
        won = bool(ours and theirs and len(theirs) >= 2 and
                   statistics.median(theirs) < MIN_GAIN * statistics.median(ours))
        if won:
            self._settled, self._period = probe, FIRST_PERIOD
            self._times[settled].clear()
            self.switches += 1
        else:
            self._period = min(MAX_PERIOD, self._period * 2)
            if ours:  # the settled count's present speed is the new reference
                self._best[(settled, n_tokens)] = statistics.median(ours)
        self._set(self._settled)

    def _set(self, n: int) -> None:
        if n != self.current:
            self._apply(n)
            self.current = n


def tuner_for(context: Any, max_threads: int) -> Optional[ThreadTuner]:
    """A tuner over `context.n_threads` for up to max_threads, or None with one thread."""
    t = ThreadTuner(max_threads, lambda n: setattr(context, "n_threads", n))
    return t if t.active else None
