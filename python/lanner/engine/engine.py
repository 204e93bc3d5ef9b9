"""Engine: one model thread running continuous batching over a native `_core.Context`.

Owns: the context (only the model thread touches it), the bounded wait queue, the running slots,
the prefix cache and the stats. submit / abort / stats / close may be called from any thread.
A step: apply aborts, admit waiting requests (prefix-cache match), build ONE batch (a decode token
per generating slot + prompt chunks within the step budget), decode, then sample + detokenize each
logits row and emit events. A request with a grammar is compiled at submit (a bad one is refused
before it is queued); its mask limits each draw, and near max_tokens its shortest closing path
is written out (grammar_closing.py) so the output is complete. Must not: parse dialects, template or tokenize
text (ids arrive ready). Over 500 lines because admission, the step, finishing and the queue
share one lock and one set of state that splitting would spread across files.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .grammar import GrammarCompiler
from .grammar_closing import CLOSE_NOW, closing_token
from .image_spans import check_prompt, decode_args
from .prefix_cache import PrefixCache
from .request_stream import RequestStream
from .scheduler import build_step
from .slot import Slot
from ..types import (
    ContextOverflowError,
    DecodeError,
    EngineClosedError,
    EngineStats,
    FinishEvent,
    FinishReason,
    GenerateRequest,
    KvCacheFullError,
    OverloadedError,
    QueuedEvent,
    Timings,
    TokenEvent,
    TokenLogprob,
    Usage,
    ValidationError,
)

DEFAULT_STEP_TOKENS = 512  # tokens per decode batch (decode tokens + prompt chunk)
DEFAULT_MAX_STEP_MS = 250.0  # while streams are generating, prompt chunks aim at steps this short
# Prompt tokens per step, at least, however slow the steps are: a typical chat turn goes in one
# step (its time to first token is one step, not several each paying the step's fixed cost).
# Was 16: on a loaded 2-core machine the 250 ms target then cut 40-token prompts into 16-token
# chunks, ~9 steps to a first token (bench/README.md, issue 10).
MIN_PROMPT_CHUNK = 128


@dataclass(eq=False)
class _Waiting:
    req: GenerateRequest
    stream: RequestStream
    t_submit: int  # ns
    grammar: Any = None  # GrammarMatcher compiled at submit, or None
    reported: int = 0    # the queue position last sent as a QueuedEvent (0: none sent)


def _default_sampler(params):
    from .sampling import Sampler

    return Sampler(params)


def _default_detokenizer(tokenizer, stop):
    from ..text.detokenizer import Detokenizer

    return Detokenizer(tokenizer, stop=stop)


class Engine:
    """Continuous-batching generation over `context` (a `_core.Context`, or anything with its API).

    tokenizer: gives `eog_ids` and `token_bytes` (and is handed to the Detokenizer).
    n_parallel: sequences decoded together (<= context.n_seq_max; the other seq ids hold cache).
    max_queue: requests that may wait while every slot is busy (0: admit only into a free slot);
      submit raises OverloadedError beyond that.
    step_token_budget: tokens per step; a long prompt is prefilled in chunks of what is left of it.
    max_step_ms: while any stream is generating, the prompt chunk is also cut so that a step's
      estimated time stays near this; None = budget only. The estimate is a decode-only step's
      measured time plus the measured marginal time per prompt token (both EMAs).
    min_prompt_chunk: prompt tokens a step may carry whatever max_step_ms says.
    thread_tuner: an engine/thread_tuner.ThreadTuner told every step's time (it may change the
      context's thread count), or None.
    """

    def __init__(
        self,
        context: Any,
        tokenizer: Any,
        *,
        n_parallel: int = 4,
        max_queue: int = 64,
        step_token_budget: Optional[int] = None,
        max_step_ms: Optional[float] = DEFAULT_MAX_STEP_MS,
        min_prompt_chunk: int = MIN_PROMPT_CHUNK,
        n_vocab: Optional[int] = None,
        sampler_factory: Optional[Callable[[Any], Any]] = None,
        detokenizer_factory: Optional[Callable[[Any, list[str]], Any]] = None,
        clock: Callable[[], int] = time.monotonic_ns,
        bidirectional_images: bool = False,
        thread_tuner: Any = None,
    ):
        n_seq = int(context.n_seq_max)
        if not 1 <= n_parallel <= n_seq:
            raise ValueError(f"n_parallel must be in [1, n_seq_max={n_seq}], got {n_parallel}")
        budget = DEFAULT_STEP_TOKENS if step_token_budget is None else int(step_token_budget)
        if budget <= n_parallel:
            raise ValueError(f"step_token_budget ({budget}) must exceed n_parallel ({n_parallel})")
        self.n_ctx = int(context.n_ctx)           # KV cells
        self.n_parallel = n_parallel
        self.max_queue = max_queue
        self.step_token_budget = budget
        self.max_step_ms = max_step_ms
        self._now = clock  # ns; every timing and the step-time estimate use it
        self.min_prompt_chunk = int(min_prompt_chunk)
        self._decode_step_ns: Optional[float] = None  # EMA: time of a step without prompt tokens
        self._ns_per_prompt_token: Optional[float] = None  # EMA: marginal time of a prompt token
        self._ctx = context
        self._tok = tokenizer
        self._n_vocab = n_vocab
        self._bidirectional_images = bidirectional_images  # Gemma 3: an image's rows see each other
        self._threads = thread_tuner  # engine/thread_tuner.py: the context's thread count, or None
        self._eog = frozenset(getattr(tokenizer, "eog_ids", ()))
        self._new_sampler = sampler_factory or _default_sampler
        self._new_detok = detokenizer_factory or _default_detokenizer
        self._cache = PrefixCache(context, n_seq)
        self.grammar = GrammarCompiler(tokenizer, n_vocab or getattr(tokenizer, "n_vocab", 0))

        # shared with other threads, guarded by _cond
        self._cond = threading.Condition(threading.Lock())
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._waiting_by_id: dict[str, _Waiting] = {}
        self._running_ids: set[str] = set()
        self._aborts: set[str] = set()
        self._closing = False
        self._close_error: Optional[str] = None
        self._stats = EngineStats(n_ctx=self.n_ctx)

        # model thread only
        self._running: list[Slot] = []
        self.profile = {"steps": 0, "decode_ns": 0, "sample_ns": 0, "tokens": 0}  # cumulative

        self._thread = threading.Thread(target=self._run, name="lanner-model", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread
    def submit(self, req: GenerateRequest) -> RequestStream:
        """Queue `req`; returns its stream at once. Raises OverloadedError (queue full),
        ContextOverflowError (prompt + max_tokens > n_ctx), ValidationError (empty prompt, ids
        outside the vocabulary: the one check of prompt ids; a grammar that does not compile),
        ValueError (max_tokens < 0, id reuse). req.sampling was validated when it was built."""
        prompt = req.prompt_tokens
        if len(prompt) == 0:
            raise ValidationError("prompt", "must not be empty")
        if req.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {req.max_tokens}")
        if req.images or min(prompt) < 0:  # image spans (image_spans.py)
            why = check_prompt(prompt, req.images, self._n_vocab,
                               min(self.step_token_budget, int(getattr(self._ctx, "n_batch", self.step_token_budget))))
            if why is not None:
                raise ValidationError("prompt", why)
        elif self._n_vocab is not None and max(prompt) >= self._n_vocab:
            raise ValidationError("prompt", f"token ids must be in [0, {self._n_vocab}) (the vocabulary)")
        if len(prompt) + req.max_tokens > self.n_ctx:
            raise ContextOverflowError(len(prompt), req.max_tokens, self.n_ctx)
        matcher = self.grammar.compile(req.grammar) if req.grammar is not None else None
        if req.id is None:
            req.id = uuid.uuid4().hex
        stream = RequestStream(req.id, self.abort)
        w = _Waiting(req, stream, self._now(), matcher)
        with self._cond:
            if self._closing:
                raise EngineClosedError("engine is closed")
            if req.id in self._waiting_by_id or req.id in self._running_ids:
                raise ValueError(f"request id {req.id!r} is already in use")
            if req.max_tokens == 0:  # nothing to generate: finish without touching the model
                self._finish_waiting(w, FinishReason.LENGTH)
                return stream
            # a request may wait only when every slot is taken: max_queue=0 means "run now or 503"
            free_slots = max(0, self.n_parallel - len(self._running_ids))
            if len(self._waiting) >= self.max_queue + free_slots:
                raise OverloadedError(f"{len(self._waiting)} requests are waiting (max_queue={self.max_queue})")
            self._waiting.append(w)
            self._waiting_by_id[req.id] = w
            self._stats.pending = len(self._waiting)
            self._stats.busy = True
            if len(self._waiting) > free_slots:  # it will wait behind others or for a slot
                self._report_queue()
            self._cond.notify()
        return stream

    def abort(self, request_id: str) -> bool:
        """Cancel a waiting or running request (its stream ends with reason `cancelled` within
        one step). False if the id is unknown or already finished."""
        with self._cond:
            w = self._waiting_by_id.get(request_id)
            if w is not None:
                self._waiting.remove(w)
                self._finish_waiting(w, FinishReason.CANCELLED)
                self._report_queue()
                return True
            if request_id in self._running_ids:
                self._aborts.add(request_id)
                self._cond.notify()
                return True
            return False

    def stats(self) -> EngineStats:
        with self._cond:
            s = self._stats
            return EngineStats(**vars(s))

    def close(self, error: Optional[str] = None) -> None:
        """Stop the model thread; every waiting or running request ends `cancelled`, or with
        FinishReason.ERROR and `error` when one is given (a server shutting down)."""
        with self._cond:
            self._closing = True
            self._close_error = error
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.grammar.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _finish_waiting(self, w: _Waiting, reason: FinishReason, error: Optional[str] = None) -> None:
        """Finish a request that never ran. Caller holds _cond."""
        self._waiting_by_id.pop(w.req.id, None)
        now = self._now()
        self._stats.total_processed += 1
        self._stats.pending = len(self._waiting)
        self._stats.busy = bool(self._waiting or self._running_ids)
        usage = Usage(prompt_tokens=len(w.req.prompt_tokens))
        timings = Timings(queue_ns=now - w.t_submit, total_ns=now - w.t_submit)
        w.stream._put(FinishEvent(reason, usage, timings, error=error))

    # ------------------------------------------------------------------ model thread
    def _run(self) -> None:
        error: Optional[str] = None
        try:
            while True:
                with self._cond:
                    while not (self._closing or self._waiting or self._running or self._aborts):
                        self._cond.wait()
                    if self._closing:
                        break
                    aborts, self._aborts = self._aborts, set()
                for slot in [s for s in self._running if s.req.id in aborts]:
                    self._finish(slot, FinishReason.CANCELLED)
                self._admit()
                if self._running:
                    self._step()
        except BaseException as e:  # a bug: fail everything rather than hang the streams
            error = f"engine failure: {e!r}"
            raise
        finally:
            error = error or self._close_error
            reason = FinishReason.ERROR if error else FinishReason.CANCELLED
            for slot in list(self._running):
                self._finish(slot, reason, error)
            with self._cond:
                self._closing = True
                while self._waiting:
                    self._finish_waiting(self._waiting.popleft(), reason, error)

    def _admit(self) -> None:
        """Move waiting requests (FIFO) into free slots while their prompt fits the cache."""
        while True:
            with self._cond:
                if not self._waiting or len(self._running) >= self.n_parallel:
                    return
                w = self._waiting[0]
            if self._running and not self._fits(w.req):
                return  # wait for running requests to finish and free cells
            with self._cond:
                if not self._waiting or self._waiting[0] is not w:
                    continue  # aborted meanwhile
                self._waiting.popleft()
                del self._waiting_by_id[w.req.id]
                self._running_ids.add(w.req.id)
                self._stats.pending = len(self._waiting)
                self._report_queue()
            try:
                slot = self._start(w)
            except Exception as e:
                with self._cond:
                    self._running_ids.discard(w.req.id)
                    self._finish_waiting(w, FinishReason.ERROR, f"could not start: {e!r}")
                continue
            self._running.append(slot)
            with self._cond:
                self._stats.running = len(self._running)

    def _report_queue(self) -> None:
        """QueuedEvent to each waiting request that asked for them and whose place changed since
        it was last told (or that was never told); under self._cond. O(waiting) <= max_queue."""
        n = len(self._waiting)
        for i, w in enumerate(self._waiting):
            if w.req.report_queue and w.reported != i + 1:
                w.reported = i + 1
                w.stream._put(QueuedEvent(i + 1, n))

    def _fits(self, req: GenerateRequest) -> bool:
        """Rough check that the uncached prompt fits next to the cells running slots still need."""
        _, n_cached = self._cache.match(req.prompt_tokens, req.session_id)
        need = len(req.prompt_tokens) - n_cached
        reserved = sum(s.prefill_left + 1 for s in self._running)
        free = self.n_ctx - self._ctx.n_cells_used() + self._cache.idle_cells_upper()
        return need + reserved <= free

    def _start(self, w: _Waiting) -> Slot:
        req = w.req
        sampler = self._new_sampler(req.sampling)
        detok = self._new_detok(self._tok, list(req.stop))
        detok.keep_special = req.keep_special  # the output format's markers stay in the text
        a = self._cache.acquire(req.prompt_tokens, req.session_id)
        return Slot(req=req, stream=w.stream, entry=a.entry, n_prompt=len(req.prompt_tokens),
                    n_cached=a.n_cached, sampler=sampler, detok=detok, grammar=w.grammar,
                    t_submit=w.t_submit, t_start=self._now())

    def _budget(self) -> int:
        """Tokens for this step: the budget, cut while streams generate so the step stays short:
        the decode tokens plus the prompt tokens that fit in max_step_ms after a decode-only
        step's time, at least min_prompt_chunk of them."""
        budget = self.step_token_budget
        n_decode = sum(1 for s in self._running if s.has_pending)
        if self.max_step_ms and self._ns_per_prompt_token and n_decode:
            room_ns = self.max_step_ms * 1e6 - (self._decode_step_ns or 0.0)
            n_prompt = max(int(room_ns / self._ns_per_prompt_token), self.min_prompt_chunk)
            budget = min(budget, n_decode + n_prompt)
        return budget

    def _learn_step_time(self, batch, ns: int) -> None:
        """Update the step-time model from a decoded batch that took `ns`."""
        def ema(old: Optional[float], new: float) -> float:
            return new if old is None else 0.7 * old + 0.3 * new

        if batch.n_prefill == 0:
            self._decode_step_ns = ema(self._decode_step_ns, ns)
        elif batch.n_prefill >= 16:  # smaller chunks measure mostly the step's fixed cost
            fixed = self._decode_step_ns or 0.0
            marginal = max(ns - fixed, 0.25 * ns) / batch.n_prefill
            self._ns_per_prompt_token = ema(self._ns_per_prompt_token, marginal)

    def _step(self) -> None:
        budget = self._budget()
        free = self._make_room(budget)
        if not self._running:
            return
        batch = build_step(self._running, budget, free)
        t0 = self._now()
        try:
            out = self._decode(batch)
        except KvCacheFullError:  # nothing was applied: evict every idle sequence and retry once
            while self._cache.evict_lru():
                pass
            batch = build_step(self._running, budget, self.n_ctx - self._ctx.n_cells_used())
            try:
                out = self._decode(batch)
            except Exception as e:
                self._fail_all(f"decode failed: {e}")
                return
        except Exception as e:  # not the core's typed failures: a bug; the cache state is unknown
            self._fail_all(f"decode failed: {e}")
            return
        if out is None:
            return  # a graph failure was isolated to its requests; the others carry on next step
        t1 = self._now()
        self._commit(batch, out)
        t2 = self._now()
        p = self.profile
        p["steps"] += 1
        p["decode_ns"] += t1 - t0
        p["sample_ns"] += t2 - t1
        p["tokens"] += batch.n_tokens
        self._learn_step_time(batch, t1 - t0)
        if self._threads is not None:
            self._threads.observe(batch.n_tokens, batch.n_prefill, t1 - t0)

    def _decode(self, batch) -> Optional[np.ndarray]:
        """decode() the batch: its logits rows, or None after a DecodeError (graph allocation or
        compute failed). Then the cells it placed are removed and each slot of the batch is tried
        alone: a slot whose own batch fails again ends with an error, the others are committed.
        KvCacheFullError (nothing applied) goes to the caller. Any other exception is a bug."""
        try:
            return self._decode_call(batch, [s for s, _ in batch.commits])
        except DecodeError as e:
            first_error = e
        slots = [s for s, _ in batch.commits]
        for slot in slots:
            self._cache.rollback(slot.entry)
        if len(slots) == 1:
            self._finish(slots[0], FinishReason.ERROR, f"decode failed: {first_error}", keep_cells=False)
            return None
        for slot in slots:
            alone = build_step([slot], batch.n_tokens, self.n_ctx - self._ctx.n_cells_used())
            try:
                out = self._decode_call(alone, [slot])
            except DecodeError as e:
                self._cache.rollback(slot.entry)
                self._finish(slot, FinishReason.ERROR, f"decode failed: {e}", keep_cells=False)
                continue
            self._commit(alone, out)
        return None

    def _decode_call(self, batch, slots) -> np.ndarray:
        """One Context.decode; image ids become their slots' embedding rows."""
        images = {k: e for s in slots for k, e in s.req.images.items()} if any(s.req.images for s in slots) else {}
        args = decode_args(batch.tokens, batch.pos, images, self._bidirectional_images) if images else \
            {"tokens": batch.tokens.astype(np.int32)}
        tokens = args.pop("tokens")
        return self._ctx.decode(tokens, batch.pos, batch.seq_id, batch.want_logits, **args)

    def _commit(self, batch, out: np.ndarray) -> None:
        """A decoded batch: its cells belong to their sequences; sample each logits row."""
        for slot, n in batch.commits:
            slot.entry.n_cells += n
        for i, slot in enumerate(batch.rows):
            self._on_logits(slot, out[i])
        with self._cond:
            self._stats.kv_cells_used = self._ctx.n_cells_used()

    def _make_room(self, budget: int) -> int:
        """Free cells for this step's batch: evict idle cached sequences (LRU) until the decode
        tokens and the wanted prompt chunk fit; if even the decode tokens cannot fit with nothing
        left to evict, the context is full: finish the longest slot with `length`. Returns free cells."""
        while self._running:
            n_decode = sum(1 for s in self._running if s.has_pending)
            n_prefill = sum(s.prefill_left for s in self._running)
            want = n_decode + min(n_prefill, budget - n_decode)
            free = self.n_ctx - self._ctx.n_cells_used()
            if free >= want:
                return free
            if self._cache.evict_lru():
                continue
            if free >= max(n_decode, 1):
                return free
            victim = max(self._running, key=lambda s: s.entry.n_cells)
            self._finish(victim, FinishReason.LENGTH, keep_cells=False)
        return 0

    def _on_logits(self, slot: Slot, logits: np.ndarray) -> None:
        """Sample one token for `slot` from its logits row (n_vocab,), emit it, check stops."""
        req = slot.req
        n_lp = req.sampling.logprobs
        forced = closing_token(slot) if slot.grammar is not None else None
        if forced == CLOSE_NOW:  # complete already and the budget is all but spent
            self._finish(slot, FinishReason.LENGTH)
            return
        try:
            if forced is not None:  # the budget is nearly spent: close the output validly
                tok = forced
            elif slot.grammar is None:
                tok = int(slot.sampler.sample(logits, slot.entry.tokens))  # restores what it touches
            else:  # only the tokens the grammar allows next (a masked copy of the row)
                tok = int(slot.sampler.sample(logits, slot.entry.tokens, slot.grammar.allowed_ids()))
            lp = top = None
            if n_lp is not None:
                lp, pairs = slot.sampler.logprobs(logits, tok, n_lp)
                top = [TokenLogprob(int(t), self._piece(int(t)), float(l)) for t, l in pairs]
                lp = float(lp)
        except Exception as e:
            self._finish(slot, FinishReason.ERROR, f"sampling failed: {e!r}")
            return
        if slot.t_first == 0:
            slot.t_first = self._now()
        if tok in self._eog and not req.ignore_eos:
            self._finish(slot, FinishReason.STOP)  # the EOG token itself is not emitted
            return
        slot.entry.tokens.append(tok)
        slot.n_gen += 1
        try:
            text = slot.detok.push(tok)
        except Exception as e:
            self._finish(slot, FinishReason.ERROR, f"detokenizing failed: {e!r}")
            return
        slot.stream._put(TokenEvent(tok, text, lp, top))
        if slot.detok.stopped:
            self._finish(slot, FinishReason.STOP)
        elif slot.grammar is not None and not self._grammar_step(slot, tok):
            return  # the grammar is complete (or failed): finished
        elif slot.n_gen >= req.max_tokens or len(slot.entry.tokens) >= self.n_ctx:
            self._finish(slot, FinishReason.LENGTH)

    def _grammar_step(self, slot: Slot, tok: int) -> bool:
        """Advance the slot's grammar by `tok`; finish the slot when nothing but end-of-generation
        can follow (STOP) or the grammar failed (ERROR). True = go on (next mask started)."""
        g = slot.grammar
        if not g.consume(tok):
            self._finish(slot, FinishReason.ERROR, f"grammar: {g.error or 'token rejected'}")
            return False
        if g.done:  # complete; by the budget's closing path: it ended at max_tokens' behest
            self._finish(slot, FinishReason.LENGTH if slot.closing is not None else FinishReason.STOP)
            return False
        if slot.closing is not None and not slot.closing:  # closed (accepting, could go on)
            self._finish(slot, FinishReason.LENGTH)
            return False
        g.prefetch()  # computed on the grammar worker while the next step decodes
        return True

    def _piece(self, token_id: int) -> str:
        return self._tok.token_bytes(token_id).decode("utf-8", errors="replace")

    def _finish(self, slot: Slot, reason: FinishReason, error: Optional[str] = None,
                keep_cells: Optional[bool] = None) -> None:
        """End `slot`: emit its FinishEvent and hand its sequence to the prefix cache. A completed
        request keeps all its cells (idle, reusable); a cancelled or failed one keeps only the
        prefix it reused, so the cache is back to where it was before it ran."""
        now = self._now()
        done = reason in (FinishReason.STOP, FinishReason.LENGTH)
        if keep_cells is None:
            keep_cells = done
        tail = ""
        if done:
            try:
                tail = slot.detok.flush()
            except Exception as e:
                reason, error = FinishReason.ERROR, f"detokenizing failed: {e!r}"
        self._running.remove(slot)
        self._cache.release(slot.entry, slot.entry.n_cells if keep_cells else slot.n_cached)
        t_first = slot.t_first or now
        timings = Timings(queue_ns=slot.t_start - slot.t_submit, prompt_eval_ns=t_first - slot.t_start,
                          eval_ns=now - t_first, total_ns=now - slot.t_submit)
        usage = Usage(prompt_tokens=slot.n_prompt, completion_tokens=slot.n_gen, cached_tokens=slot.n_cached)
        with self._cond:
            self._running_ids.discard(slot.req.id)
            st = self._stats
            st.total_processed += 1
            st.total_prompt_tokens += slot.n_prompt
            st.total_completion_tokens += slot.n_gen
            st.total_cached_tokens += slot.n_cached
            st.running = len(self._running)
            st.busy = bool(self._running or self._waiting)
            st.kv_cells_used = self._ctx.n_cells_used()
        slot.stream._put(FinishEvent(reason, usage, timings, error=error, text=tail))

    def _fail_all(self, error: str) -> None:
        """A decode failed: fail every running request and forget the cache (its state is unknown)."""
        for slot in list(self._running):
            self._finish(slot, FinishReason.ERROR, error, keep_cells=False)
        self._cache.clear()
        with self._cond:
            self._stats.kv_cells_used = self._ctx.n_cells_used()
