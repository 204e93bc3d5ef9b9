"""Prometheus metrics for /metrics, kept in-process (one gunicorn worker holds the model).

Owns: request counters by route and status, token counters, finish reasons, and histograms
of time-to-first-token, time per output token and request duration (seconds, from the engine's
FinishEvent.timings), plus the engine's queue gauges at scrape time.
Must not: depend on prometheus_client; the text exposition format is written here.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Optional

from ..types import EngineStats, FinishEvent

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)        # seconds
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)       # s / token
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)   # seconds


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last = +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, acc = [], 0
        for le, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{name}_bucket{{le="{le:g}"}} {acc}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.sum:.6f}")
        out.append(f"{name}_count {self.count}")
        return out


def _labels(**kv: str) -> str:
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"') for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.http = defaultdict(int)         # (method, route, status) -> responses
        self.generations = defaultdict(int)  # dialect -> submitted
        self.rejections = defaultdict(int)   # (dialect, error type) -> count
        self.finished = defaultdict(int)     # reason -> count
        self.client_aborts = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.duration = Histogram(DURATION_BUCKETS)

    def http_response(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.http[(method, route, status)] += 1

    def submitted(self, dialect: str) -> None:
        with self._lock:
            self.generations[dialect] += 1

    def rejected(self, dialect: str, error: str) -> None:
        with self._lock:
            self.rejections[(dialect, error)] += 1

    def client_abort(self) -> None:
        with self._lock:
            self.client_aborts += 1

    def finish(self, ev: FinishEvent) -> None:
        """Record one finished generation from the engine's own measurements."""
        u, t = ev.usage, ev.timings
        with self._lock:
            self.finished[ev.reason.value] += 1
            self.prompt_tokens += u.prompt_tokens
            self.completion_tokens += u.completion_tokens
            self.cached_tokens += u.cached_tokens
            if u.completion_tokens > 0:
                self.ttft.observe((t.queue_ns + t.prompt_eval_ns) / 1e9)
            if u.completion_tokens > 1:
                self.tpot.observe(t.eval_ns / 1e9 / (u.completion_tokens - 1))
            self.duration.observe(t.total_ns / 1e9)

    def render(self, stats: Optional[EngineStats], state: str) -> str:
        L: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            L.append(f"# HELP {name} {help_}")
            L.append(f"# TYPE {name} {kind}")

        with self._lock:
            head("lanner_model_ready", "gauge", "1 when the model is loaded and serving")
            L.append(f"lanner_model_ready {1 if state == 'ready' else 0}")
            head("lanner_http_responses_total", "counter", "HTTP responses by route and status")
            for (m, r, s), n in sorted(self.http.items()):
                L.append(f"lanner_http_responses_total{_labels(method=m, route=r, status=s)} {n}")
            head("lanner_requests_total", "counter", "generation requests accepted by the engine")
            for d, n in sorted(self.generations.items()):
                L.append(f"lanner_requests_total{_labels(dialect=d)} {n}")
            head("lanner_requests_rejected_total", "counter", "generation requests refused at submit")
            for (d, e), n in sorted(self.rejections.items()):
                L.append(f"lanner_requests_rejected_total{_labels(dialect=d, error=e)} {n}")
            head("lanner_requests_finished_total", "counter", "finished generations by reason")
            for r, n in sorted(self.finished.items()):
                L.append(f"lanner_requests_finished_total{_labels(reason=r)} {n}")
            head("lanner_client_disconnects_total", "counter", "requests aborted because the client left")
            L.append(f"lanner_client_disconnects_total {self.client_aborts}")
            head("lanner_prompt_tokens_total", "counter", "prompt tokens of finished requests")
            L.append(f"lanner_prompt_tokens_total {self.prompt_tokens}")
            head("lanner_cached_prompt_tokens_total", "counter", "prompt tokens reused from the prefix cache")
            L.append(f"lanner_cached_prompt_tokens_total {self.cached_tokens}")
            head("lanner_completion_tokens_total", "counter", "generated tokens of finished requests")
            L.append(f"lanner_completion_tokens_total {self.completion_tokens}")
            head("lanner_time_to_first_token_seconds", "histogram", "submit to first token")
            L += self.ttft.lines("lanner_time_to_first_token_seconds")
            head("lanner_time_per_output_token_seconds", "histogram", "mean gap between generated tokens")
            L += self.tpot.lines("lanner_time_per_output_token_seconds")
            head("lanner_request_duration_seconds", "histogram", "submit to finish")
            L += self.duration.lines("lanner_request_duration_seconds")
        if stats is not None:
            for name, val, help_ in (
                ("lanner_queue_pending", stats.pending, "requests waiting for a slot"),
                ("lanner_queue_running", stats.running, "sequences in the running batch"),
                ("lanner_kv_cells_used", stats.kv_cells_used, "KV cells holding a sequence"),
                ("lanner_kv_cells_total", stats.n_ctx, "KV cells in the cache"),
                ("lanner_requests_processed", stats.total_processed, "requests finished by the engine"),
            ):
                head(name, "gauge", help_)
                L.append(f"{name} {val}")
        return "\n".join(L) + "\n"
