"""A deterministic stand-in for lanner.LLM for the server tests (no model, no native code).

Same public surface the server uses: model_name, model_path, metadata, n_ctx, tokenize,
chat_tokens, engine.submit/abort/stats. Tokens are UTF-8 bytes (id = byte + 3, BOS = 1); the
reply is a canned text split into word pieces, one piece per generated token. It honors
max_tokens (LENGTH), stop strings (STOP, never emitted), holds the last piece back to release it
in FinishEvent.text, simulates a prefix cache (cached_tokens), records submits and aborts, and
can be made to refuse (OverloadedError) or fail mid-stream (FinishReason.ERROR). A request's
grammar is compiled at submit, as the real engine does (a bad one is a ValidationError), over a
byte vocabulary; the canned reply does not follow it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, Union

from lanner.types import (ContextOverflowError, EngineClosedError, EngineStats, FinishEvent,
                          FinishReason,
                          GenerateRequest, OverloadedError, TokenEvent, TokenLogprob, Timings,
                          Usage, ValidationError)

DEFAULT_REPLY = "The sky is blue because air scatters blue light more than red light."
BOS = 1


class FakeStream:
    """RequestStream double: iterate TokenEvents then one FinishEvent; close() aborts."""

    def __init__(self, engine: "FakeEngine", req: GenerateRequest, pieces: list[str], cached: int):
        self.engine, self.req, self.id = engine, req, req.id
        self._pieces, self._cached = pieces, cached
        self.t_submit = time.perf_counter_ns()
        self.finished = False
        self.cancelled = False
        self._it = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def _run(self):
        eng, req = self.engine, self.req
        t_first = None
        emitted = ""
        n_out = 0
        reason = FinishReason.STOP
        pieces = self._pieces
        i = 0
        held = ""
        while True:
            if self.cancelled:
                return
            if eng.fail_after is not None and n_out >= eng.fail_after:
                yield self._finish(FinishReason.ERROR, n_out, t_first, error="simulated engine failure")
                return
            if eng.closed is not None:
                yield self._finish(FinishReason.ERROR if eng.closed else FinishReason.CANCELLED,
                                   n_out, t_first, error=eng.closed or None)
                return
            if i >= len(pieces):
                if not eng.loop:
                    break
                i = 0
            if n_out >= req.max_tokens:
                reason = FinishReason.LENGTH
                break
            piece = pieces[i]
            i += 1
            if eng.delay_s:
                time.sleep(eng.delay_s)
            if self.cancelled:
                return
            t_first = t_first or time.perf_counter_ns()
            n_out += 1
            candidate = emitted + held + piece
            hit = min((candidate.find(s) for s in req.stop if s in candidate), default=-1)
            if hit >= 0:
                # text before the stop string is released, the stop string never is
                held = candidate[len(emitted):hit]
                reason = FinishReason.STOP
                break
            out, held = held, piece  # release the previous piece, hold this one back
            emitted += out
            yield self._token(n_out, out)
        yield self._finish(reason, n_out, t_first, text=held)

    def _token(self, n: int, text: str) -> TokenEvent:
        tid = 1000 + n
        ev = TokenEvent(token_id=tid, text=text)
        if self.req.sampling.logprobs is not None:
            ev.logprob = -0.25
            top = [TokenLogprob(tid, text, -0.25), TokenLogprob(7, "<alt>", -2.0)]
            ev.top_logprobs = top[: self.req.sampling.logprobs]
        return ev

    def _finish(self, reason, n_out, t_first, text: str = "", error=None) -> FinishEvent:
        now = time.perf_counter_ns()
        t_first = t_first or now
        self.finished = True
        self.engine._done(self)
        queue_ns = 1000  # the fake never queues
        return FinishEvent(
            reason=reason, text=text, error=error,
            usage=Usage(prompt_tokens=len(self.req.prompt_tokens), completion_tokens=n_out,
                        cached_tokens=self._cached),
            timings=Timings(queue_ns=queue_ns, prompt_eval_ns=max(1, t_first - self.t_submit),
                            eval_ns=max(0, now - t_first), total_ns=max(1, now - self.t_submit) + queue_ns))

    def close(self) -> None:
        if self.finished or self.cancelled:
            return
        self.cancelled = True
        self.engine._aborted(self)


class ByteVocab:
    """The fake's tokenizer as the grammar compiler reads it: id = byte + 3, EOS = 2."""

    n_vocab, bos_id, eos_id, eog_ids = 259, BOS, 2, frozenset({2})

    def token_bytes(self, i: int) -> bytes:
        return bytes([i - 3]) if i >= 3 else b"<s%d>" % i

    def special_ids(self) -> list[int]:
        return [0, 1, 2]

    def encode(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]


class FakeEngine:
    def __init__(self, llm: "FakeLLM", parallel: int = 2, max_queue: int = 4):
        from lanner.engine.grammar import GrammarCompiler

        self.grammar = GrammarCompiler(ByteVocab(), ByteVocab.n_vocab)
        self.llm = llm
        self.parallel, self.max_queue = parallel, max_queue
        self.delay_s = 0.0
        self.loop = False
        self.overloaded = False
        self.fail_after: Optional[int] = None
        self.closed: Optional[str] = None  # close(error): "" = cancelled, else the error
        self.submitted: list[GenerateRequest] = []
        self.aborted: list[str] = []
        self.active: dict[str, FakeStream] = {}
        self.total_processed = 0
        self._prompts: list[list[int]] = []
        self._lock = threading.Lock()

    def submit(self, req: GenerateRequest) -> FakeStream:
        """The real Engine.submit's contract: prompt ids checked against the vocabulary here."""
        if self.closed is not None:
            raise EngineClosedError("engine is closed")
        n_vocab = self.llm.metadata["n_vocab"]
        if not req.prompt_tokens:
            raise ValidationError("prompt", "must not be empty")
        if min(req.prompt_tokens) < 0 or max(req.prompt_tokens) >= n_vocab:
            raise ValidationError("prompt", f"token ids must be in [0, {n_vocab}) (the vocabulary)")
        if not isinstance(req.max_tokens, int) or req.max_tokens < 1:
            raise ValidationError("max_tokens", f"must be >= 1, got {req.max_tokens!r}")
        if len(req.prompt_tokens) + req.max_tokens > self.llm.n_ctx:
            raise ContextOverflowError(len(req.prompt_tokens), req.max_tokens, self.llm.n_ctx)
        if req.grammar is not None:
            self.grammar.compile(req.grammar)
        with self._lock:
            if self.overloaded or len(self.active) >= self.parallel + self.max_queue:
                raise OverloadedError(f"{len(self.active)} requests in flight")
            req.id = req.id or uuid.uuid4().hex
            cached = max((_common_prefix(p, req.prompt_tokens) for p in self._prompts), default=0)
            self._prompts = (self._prompts + [list(req.prompt_tokens)])[-8:]
            self.submitted.append(req)
            reply = self.llm.reply(self.llm.detokenize(req.prompt_tokens)) if callable(self.llm.reply) \
                else self.llm.reply
            stream = FakeStream(self, req, re.findall(r"\s*\S+\s*$|\s*\S+", reply), cached)
            self.active[req.id] = stream
        return stream

    def abort(self, request_id: str) -> None:
        s = self.active.get(request_id)
        if s is not None:
            s.close()

    def close(self, error: Optional[str] = None) -> None:
        """As Engine.close: running requests end (with `error`, if given); no new ones."""
        self.closed = error or ""

    def _done(self, s: FakeStream) -> None:
        with self._lock:
            self.active.pop(s.id, None)
            self.total_processed += 1

    def _aborted(self, s: FakeStream) -> None:
        with self._lock:
            self.active.pop(s.id, None)
            self.aborted.append(s.id)
            self.total_processed += 1

    def stats(self) -> EngineStats:
        with self._lock:
            n = len(self.active)
            return EngineStats(busy=n > 0, running=min(n, self.parallel),
                               pending=max(0, n - self.parallel),
                               total_processed=self.total_processed, n_ctx=self.llm.n_ctx,
                               kv_cells_used=sum(len(s.req.prompt_tokens) for s in self.active.values()))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return min(n, len(b) - 1) if n else 0


class FakeLLM:
    def __init__(self, reply: Union[str, Callable[[str], str]] = DEFAULT_REPLY, n_ctx: int = 2048,
                 model_path: str = "/models/fake-model.Q4_0.gguf", parallel: int = 2,
                 max_queue: int = 4):
        self.model_path = model_path
        self.model_name = Path(model_path).stem
        self.n_ctx = n_ctx
        self.reply = reply
        self.metadata = {"architecture": "llama", "context_length": 8192, "n_vocab": 65536,
                         "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n"
                                          "{{ m.content }}<|im_end|>\n{% endfor %}",
                         "bos_token": "<s>", "eos_token": "</s>", "n_params": 135_000_000,
                         "file_type": "Q4_0", "quantization": "Q4_0"}
        self.calls: list[dict] = []  # chat_tokens calls: messages, tools, template kwargs
        self.engine = FakeEngine(self, parallel, max_queue)

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return ([BOS] if add_special else []) + [b + 3 for b in text.encode("utf-8")]

    def detokenize(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", "replace")

    def chat_tokens(self, messages: list[dict], tools=None, add_generation_prompt: bool = True,
                    **template_kwargs) -> list[int]:
        self.calls.append({"messages": messages, "tools": tools, "kwargs": template_kwargs})
        text = "".join(f"<|im_start|>{m['role']}\n{m.get('content') or ''}<|im_end|>\n"
                       for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.tokenize(text)
