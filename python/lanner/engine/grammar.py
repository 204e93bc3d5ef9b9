"""Grammar-constrained decoding on llguidance: which tokens may come next, for one request.

Owns: GrammarCompiler (llguidance's tokenizer, built once per model from our vocabulary on first
use; a Grammar -> GrammarMatcher, compiled with its first mask in the caller's thread so a bad
grammar is a ValidationError('grammar') before the request is queued; one worker thread for
masks) and GrammarMatcher (the allowed-token mask of the next step, advanced by each sampled
token). A mask is computed on the worker right after the previous token is consumed, so it
overlaps the next decode (llguidance releases the GIL). Must not: sample or touch the context.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from ..types import Grammar, ValidationError
from .grammar_closing import ClosingSearch
from .grammar_limits import MAX_SCHEMA_BYTES, check_regex, check_schema

# JSON is written compactly with a space after ',' and ':' (no free whitespace: a small model
# cannot wander off into newlines). A schema's own "x-guidance" options override these.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class _Vocab:
    """Our tokenizer as llguidance.TokenizerWrapper reads it: token bytes, special ids, encode.
    `tokens` (a list of every token's bytes) is only read while llguidance builds its own copy;
    GrammarCompiler then empties it (~14 MiB for a 262k vocabulary)."""

    def __init__(self, tokenizer: Any, eog: list[int]):
        self._tok = tokenizer
        self.tokens: Any = [tokenizer.token_bytes(i) for i in range(tokenizer.n_vocab)]
        self.special_token_ids = sorted(set(tokenizer.special_ids()) | set(eog))
        self.eos_token_id = eog[0] if eog else tokenizer.eos_id
        self.bos_token_id = tokenizer.bos_id

    def __call__(self, text) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        ids = self._tok.encode(text, add_special=False, parse_special=False)
        if ids and getattr(self._tok, "add_space_prefix", False):
            tb = self._tok.token_bytes
            first = tb(ids[0])  # SentencePiece's dummy prefix is no part of the text
            if first.startswith(b" ") and b"".join(tb(i) for i in ids) == b" " + text.encode("utf-8"):
                ids = self._spell(first[1:]) + ids[1:]
        return ids

    def _spell(self, data: bytes) -> list[int]:
        """Ids spelling `data`: the token with exactly these bytes, else one token per byte."""
        if not data:
            return []
        if not hasattr(self, "_by_bytes"):
            special = set(self.special_token_ids)
            self._by_bytes: dict[bytes, int] = {}
            for i in range(self._tok.n_vocab):
                b = self._tok.token_bytes(i)
                if i not in special and b:
                    self._by_bytes.setdefault(b, i)
        if data in self._by_bytes:
            return [self._by_bytes[data]]
        return [self._by_bytes[bytes([c])] for c in data if bytes([c]) in self._by_bytes]


class GrammarCompiler:
    """Compiles grammars for one model. Thread-safe; close() stops the mask worker."""

    def __init__(self, tokenizer: Any, n_vocab: int):
        self._tok = tokenizer
        self.n_vocab = int(n_vocab)                # logits row length (may exceed the vocabulary)
        self.n_words = (self.n_vocab + 31) // 32   # int32 words of one bitmask
        self._ll = None                            # llguidance.LLTokenizer, built on first use
        self._closing: Optional[ClosingSearch] = None  # built on first use
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self.mask_ns: collections.deque[int] = collections.deque(maxlen=100_000)  # per mask
        self.wait_ns = 0                           # model-thread time spent waiting for masks
        self.overlap = True                        # False: masks computed in the model thread
                                                   # when needed (for measuring the overlap)

    def warm(self) -> None:
        """Build llguidance's tokenizer now (seconds for a 262k vocabulary) rather than on the
        first grammar request."""
        self._vocab()

    def _vocab(self):
        with self._lock:
            if self._ll is None:
                import llguidance

                eog = sorted(getattr(self._tok, "eog_ids", ()))
                vocab = _Vocab(self._tok, eog)
                wrapper = llguidance.TokenizerWrapper(vocab)
                # slices=[]: no precomputed token subsets for the lexer (they cost 65 of 98 MiB
                # for Gemma 3's 262k vocabulary; masks measured as fast without: bench/README.md)
                self._ll = llguidance.LLTokenizer(wrapper, n_vocab=self.n_vocab, eos_token=eog or None,
                                                  slices=[])
                vocab.tokens = wrapper.tokens = ()  # llguidance copied them; it keeps `wrapper`
                                                    # only to call it (encode)
            return self._ll

    def closing(self) -> ClosingSearch:
        """The closing search for this vocabulary (built on first use)."""
        with self._lock:
            if self._closing is None:
                special = set(self._tok.special_ids()) | set(getattr(self._tok, "eog_ids", ()))
                self._closing = ClosingSearch(self._tok, self.n_vocab, special)
            return self._closing

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lanner-grammar")
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # ---- compile: Grammar -> llguidance grammar text -> matcher with its first mask ----------

    def compile(self, grammar: Grammar) -> "GrammarMatcher":
        """A matcher for `grammar`; ValidationError('grammar', why) if it is past a limit, does
        not compile, or matches nothing."""
        import llguidance

        text = _grammar_text(grammar)
        limits = llguidance.LLParserLimits(verbose_errors=False)
        m = llguidance.LLMatcher(self._vocab(), text, log_level=0, limits=limits)
        if m.is_error():
            raise ValidationError("grammar", _short(m.get_error()))
        gm = GrammarMatcher(m, self)
        gm.fill()
        nothing = m.is_stopped() and not m.is_accepting()  # only EOS at the start, not accepted
        if nothing and (not m.is_error() or "NoExtension" in m.get_error()):
            raise ValidationError("grammar", "it matches no text at all (e.g. a $ref that only "
                                             "refers to itself)")
        if m.is_error():
            raise ValidationError("grammar", _short(m.get_error()))
        return gm


def _grammar_text(g: Grammar) -> str:
    import llguidance

    if g.kind == "json_schema":
        try:
            schema = json.loads(g.source)
        except RecursionError:
            raise ValidationError("grammar", "the schema nests too deeply (the limit is "
                                             "64 levels)") from None
        except ValueError as e:
            raise ValidationError("grammar", f"the schema is not valid JSON: {str(e)[:200]}") from None
        check_schema(schema, len(g.source.encode("utf-8")))
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(
                g.source, defaults=JSON_STYLE, overrides={"lenient": not g.strict})
        except ValueError as e:
            raise ValidationError("grammar", _short(str(e))) from None
    if g.kind == "regex":
        check_regex(g.source)
        return llguidance.LLMatcher.grammar_from_regex(g.source)
    if len(g.source) > MAX_SCHEMA_BYTES:
        raise ValidationError("grammar", f"the grammar is {len(g.source)} characters; the limit "
                                         f"is {MAX_SCHEMA_BYTES}")
    return llguidance.LLMatcher.grammar_from_lark(g.source)


def _short(msg: str) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= 400 else msg[:400] + " ..."


class GrammarMatcher:
    """One request's grammar state. The model thread calls allowed_ids() (waits for the mask),
    then consume(token) and prefetch() (starts the next mask on the worker)."""

    def __init__(self, matcher: Any, compiler: GrammarCompiler):
        self._m = matcher
        self._c = compiler
        self._words = np.zeros(compiler.n_words, dtype=np.int32)  # (n_words,) bit i = token i allowed
        self._pending: Optional[Future] = None
        self._stale = False  # the mask is for an earlier state (overlap off)

    def fill(self) -> None:
        """Compute the next mask into the bitmask (GIL released while llguidance works)."""
        t0 = time.perf_counter_ns()
        self._m.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        self._c.mask_ns.append(time.perf_counter_ns() - t0)

    def prefetch(self) -> None:
        """Start computing the next mask on the worker (after consume)."""
        if self._c.overlap:
            self._pending = self._c._executor().submit(self.fill)
        else:
            self._stale = True

    def _wait(self) -> None:
        """Wait for a prefetched mask (the matcher must not be touched while it is computed)."""
        if self._pending is not None or self._stale:
            t0 = time.perf_counter_ns()
            if self._pending is not None:
                self._pending.result()
            else:
                self.fill()
            self._c.wait_ns += time.perf_counter_ns() - t0
            self._pending, self._stale = None, False

    def allowed_ids(self) -> np.ndarray:
        """Token ids the grammar allows next, ascending (int64); waits for a prefetched mask."""
        self._wait()
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")[: self._c.n_vocab]
        return np.flatnonzero(bits)

    def consume(self, token_id: int) -> bool:
        """Advance by the sampled token; False if the grammar did not allow it (see error)."""
        self._wait()
        return bool(self._m.consume_token(int(token_id)))

    def closing_path(self, max_len: int) -> Optional[list[int]]:
        """Token ids (<= max_len) that complete the output from here (see grammar_closing.py),
        [] if it is complete already, None if none was found."""
        self._wait()
        return self._c.closing().path(self._m, max_len)

    @property
    def done(self) -> bool:
        """Only an end-of-generation token may follow: the output is complete."""
        self._wait()
        return bool(self._m.is_stopped())

    @property
    def error(self) -> str:
        return self._m.get_error()
