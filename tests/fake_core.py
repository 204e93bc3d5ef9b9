"""A deterministic stand-in for `lanner._core` (Model, Context) plus a tiny tokenizer, for engine tests.

Owns: a real multi-sequence KV cell table (position, token, set of seq ids per cell) with the
exact Context contract (decode / seq_rm / seq_cp / seq_keep / seq_pos_max / kv_clear / n_cells_used)
and logits that are a hash of the sequence's visible (pos, token) history, so batched == solo and
prefix reuse are checked for real. It also counts every token passed to decode, and keeps a
simulated clock (`clock()`, ns) that each decode advances by ns_per_token per batch token.
Must not: depend on lanner internals (only the error types of lanner.types); it is test-only.
"""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from lanner.types import DecodeError, KvCacheFullError


class FakeModel:
    def __init__(self, n_vocab: int = 64, n_ctx_train: int = 4096):
        self.arch = "fake"
        self.n_vocab = n_vocab
        self.n_ctx_train = n_ctx_train
        self.metadata = {"general.architecture": "fake"}


class FakeContext:
    """Cell table: pos[c] (-1 = free), tok[c], holds[c, s] (seq s holds cell c)."""

    def __init__(self, model: FakeModel, n_ctx: int = 4096, n_batch: int = 512, n_seq_max: int = 16,
                 n_threads: int = 0, strict: bool = True, ns_per_token: int = 0):
        self.model = model
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.n_threads = n_threads
        self.strict = strict                       # positions of a seq must grow by exactly 1
        self._pos = np.full(n_ctx, -1, np.int64)   # [n_ctx]
        self._tok = np.zeros(n_ctx, np.int64)      # [n_ctx]
        self._holds = np.zeros((n_ctx, n_seq_max), np.bool_)  # [n_ctx, n_seq]
        self._out = None                           # last result: poisoned at the next decode
        self.decode_calls: list[int] = []          # tokens per decode call
        self.decode_log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (tokens, pos, seq)
        self.fail_next: Exception | None = None    # raise this from the next decode
        self.fail_seq: int | None = None           # DecodeError from any batch holding this seq,
                                                   # after its cells were placed (as a real
                                                   # compute failure leaves earlier ubatches')
        self.gate: threading.Semaphore | None = None  # if set, each decode takes one permit first
        self.calls_started = 0                     # decode calls entered (before the gate)
        self.ns_per_token = ns_per_token           # simulated decode cost
        self.now_ns = 0                            # simulated time, see clock()

    # -- cells
    def n_cells_used(self) -> int:
        return int(self._holds.any(axis=1).sum())

    def _free_cells(self) -> np.ndarray:
        return np.flatnonzero(~self._holds.any(axis=1))

    def _range(self, p0: int, p1: int) -> np.ndarray:
        lo = -np.inf if p0 < 0 else p0
        hi = np.inf if p1 < 0 else p1
        return (self._pos >= lo) & (self._pos < hi) & (self._pos >= 0)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        r = self._range(p0, p1)
        if seq_id < 0:
            self._holds[r, :] = False
        else:
            self._check_seq(seq_id)
            self._holds[r, seq_id] = False
        self._pos[~self._holds.any(axis=1)] = -1
        return True

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self._check_seq(src)
        self._check_seq(dst)
        r = self._range(p0, p1) & self._holds[:, src]
        self._holds[r, dst] = True

    def seq_keep(self, seq_id: int) -> None:
        keep = self._holds[:, seq_id].copy()
        self._holds[:] = False
        self._holds[:, seq_id] = keep
        self._pos[~keep] = -1

    def seq_pos_max(self, seq_id: int) -> int:
        c = self._holds[:, seq_id]
        return int(self._pos[c].max()) if c.any() else -1

    def kv_clear(self) -> None:
        self._holds[:] = False
        self._pos[:] = -1

    def _check_seq(self, s: int) -> None:
        if not 0 <= s < self.n_seq_max:
            raise ValueError(f"seq_id {s} out of range")

    # -- decode
    def decode(self, tokens, pos, seq_id, want_logits) -> np.ndarray:
        for a, dt in ((tokens, np.int32), (pos, np.int32), (seq_id, np.int32), (want_logits, np.bool_)):
            assert isinstance(a, np.ndarray) and a.dtype == dt and a.ndim == 1, (a, dt)
        self.calls_started += 1
        if self.gate is not None:
            self.gate.acquire()
        n = tokens.shape[0]
        assert n > 0 and pos.shape[0] == n and seq_id.shape[0] == n and want_logits.shape[0] == n
        if self.fail_next is not None:
            e, self.fail_next = self.fail_next, None
            raise e
        if self._out is not None:
            self._out[:] = np.nan  # the previous result is only valid until the next decode
        if tokens.min() < 0 or tokens.max() >= self.model.n_vocab:
            raise ValueError("token id out of range")
        free = self._free_cells()
        if len(free) < n:
            raise KvCacheFullError(f"KV cache full: {n} tokens, {len(free)} free cells")
        if self.strict:
            nxt: dict[int, int] = {}
            for p, s in zip(pos.tolist(), seq_id.tolist()):
                self._check_seq(s)
                want = nxt.get(s, self.seq_pos_max(s) + 1)
                if p != want:
                    raise ValueError(f"fake: seq {s} got pos {p}, expected {want}")
                nxt[s] = p + 1
        self.now_ns += n * self.ns_per_token
        cells = free[:n]
        self._pos[cells] = pos
        self._tok[cells] = tokens
        self._holds[cells, :] = False
        self._holds[cells, seq_id] = True
        if self.fail_seq is not None and self.fail_seq in seq_id:
            raise DecodeError("graph compute failed (fake)")
        self.decode_calls.append(n)
        self.decode_log.append((tokens.copy(), pos.copy(), seq_id.copy()))
        rows = [self._logits(int(s), int(p)) for s, p, w in zip(seq_id, pos, want_logits) if w]
        out = np.stack(rows) if rows else np.zeros((0, self.model.n_vocab), np.float32)
        self._out = out
        return out

    def _logits(self, s: int, p: int) -> np.ndarray:
        """(n_vocab,) float32, a function of the (pos, token) history seq s sees at pos p."""
        c = self._holds[:, s] & (self._pos <= p) & (self._pos >= 0)
        order = np.argsort(self._pos[c], kind="stable")
        hist = np.stack([self._pos[c][order], self._tok[c][order]]).astype(np.int64)
        seed = int.from_bytes(hashlib.blake2b(hist.tobytes(), digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(self.model.n_vocab).astype(np.float32)

    def clock(self) -> int:
        """Simulated ns: pass as Engine(clock=ctx.clock) for timings that do not depend on the host."""
        self.now_ns += 1
        return self.now_ns

    # -- test helpers for stepping a gated engine one decode at a time
    def wait_started(self, n: int, timeout: float = 10.0) -> None:
        """Block until `n` decode calls have been entered (the model thread waits at the gate)."""
        end = time.monotonic() + timeout
        while self.calls_started < n:
            if time.monotonic() > end:
                raise TimeoutError(f"only {self.calls_started} decode calls started, wanted {n}")
            time.sleep(0.001)

    def step(self, n: int = 1) -> None:
        """Let `n` more gated decodes run and wait until the model thread reaches the next one
        (or goes idle: then it times out quietly)."""
        target = self.calls_started + n
        self.gate.release(n)
        try:
            self.wait_started(target, timeout=2.0)
        except TimeoutError:
            pass

    def open_gate(self) -> None:
        g, self.gate = self.gate, None
        if g is not None:
            g.release(1 << 20)

    def history(self, s: int) -> list[int]:
        """Tokens of seq s in position order (for assertions)."""
        c = self._holds[:, s]
        order = np.argsort(self._pos[c], kind="stable")
        return self._tok[c][order].tolist()


class FakeTokenizer:
    """Token i -> b"<i>" except 0 (BOS) and 1 (EOG), which have no text."""

    def __init__(self, n_vocab: int = 64):
        self.n_vocab = n_vocab
        self.bos_id = 0
        self.eog_ids = frozenset({1})

    def token_bytes(self, i: int) -> bytes:
        return b"" if i in (0, 1) else f"<{i}>".encode()

    def decode(self, ids) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")


class FakeSampler:
    """Greedy: argmax; logprobs from a log-softmax."""

    def __init__(self, params):
        self.params = params

    def sample(self, logits, prev_tokens) -> int:
        return int(np.argmax(logits))

    def logprobs(self, logits, token_id, n):
        x = logits.astype(np.float64)
        lp = x - (np.log(np.exp(x - x.max()).sum()) + x.max())
        top = np.argsort(-lp, kind="stable")[:n]
        return float(lp[token_id]), [(int(t), float(lp[t])) for t in top]


class FakeDetokenizer:
    """Text deltas with stop strings: holds back a suffix that could start a stop string."""

    def __init__(self, tokenizer, stop):
        self.tok = tokenizer
        self.stop = [s for s in stop if s]
        self.buf = ""
        self.sent = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.buf += self.tok.token_bytes(token_id).decode()
        for s in self.stop:
            i = self.buf.find(s)
            if i >= 0:
                self.stopped = True
                out, self.sent = self.buf[self.sent:i], len(self.buf)
                return out
        hold = max((k for s in self.stop for k in range(1, len(s)) if self.buf.endswith(s[:k])), default=0)
        safe = len(self.buf) - hold
        out, self.sent = self.buf[self.sent:safe], max(self.sent, safe)
        return out

    def flush(self) -> str:
        if self.stopped:
            return ""
        out, self.sent = self.buf[self.sent:], len(self.buf)
        return out
