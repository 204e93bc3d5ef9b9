"""Typed records passed between the dialect adapters, the engine and the sampler.

Owns: SamplingParams (the one place sampling defaults live, with validation), Grammar (a
constraint on the output, as source text), GenerateRequest, TokenEvent, FinishEvent, Usage,
Timings, FinishReason and the engine's typed errors.
Must not: hold JSON, HTTP objects or native handles. Adapters build these; the engine reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional


class ValidationError(ValueError):
    """A request field has a bad value. `field` names it (e.g. "top_p") for the dialect's error."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class OverloadedError(RuntimeError):
    """The engine's wait queue is full; retry later (the server answers 503 + Retry-After)."""


class EngineClosedError(RuntimeError):
    """The engine is shutting down and takes no new requests (the server answers 503)."""


class KvCacheFullError(RuntimeError):
    """The native core had no free KV cells for a batch; nothing was applied (retry after evicting)."""


class DecodeError(RuntimeError):
    """The native core failed to allocate or compute a batch's graph. Cells that earlier ubatches
    of the same batch took stay occupied: the caller removes that step's positions."""


class ContextOverflowError(ValueError):
    """prompt tokens + max_tokens do not fit the context window (counts are tokens)."""

    def __init__(self, n_prompt: int, max_tokens: int, n_ctx: int):
        super().__init__(
            f"prompt has {n_prompt} tokens and max_tokens is {max_tokens}, "
            f"which exceeds the context size of {n_ctx} tokens"
        )
        self.n_prompt, self.max_tokens, self.n_ctx = n_prompt, max_tokens, n_ctx


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options shared by the Python API, the CLI and every HTTP dialect.

    The defaults here are the product's defaults, the ones the server spec's option tables give:
    greedy decoding with every filter and penalty off, so output is reproducible unless a
    caller asks for sampling. A typical sampling setup: temperature 0.8, top_k 40, top_p 0.95,
    min_p 0.05, repeat_penalty 1.1. Validated once, when built (frozen afterwards: derive variants
    with dataclasses.replace, which validates again); the engine and sampler trust it.
    """

    temperature: float = 0.0        # 0 = greedy
    top_k: int = 0                  # 0 = off (whole vocabulary)
    top_p: float = 1.0              # 1.0 = off
    min_p: float = 0.0              # 0.0 = off
    repeat_penalty: float = 1.0     # 1.0 = off
    repeat_last_n: int = 64         # window in tokens for the penalties; -1 = whole context
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None      # None = random
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added logit
    logprobs: Optional[int] = None  # top-N logprobs per generated token; None = off

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "SamplingParams":
        def finite(name: str, v: float) -> None:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValidationError(name, f"must be a finite number, got {v!r}")

        for name in ("temperature", "top_p", "min_p", "repeat_penalty",
                     "presence_penalty", "frequency_penalty"):
            finite(name, getattr(self, name))
        if self.temperature < 0:
            raise ValidationError("temperature", f"must be >= 0, got {self.temperature}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValidationError("top_p", f"must be in [0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValidationError("min_p", f"must be in [0, 1], got {self.min_p}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValidationError("top_k", f"must be an integer >= 0, got {self.top_k!r}")
        if self.repeat_penalty <= 0:
            raise ValidationError("repeat_penalty", f"must be > 0, got {self.repeat_penalty}")
        if not isinstance(self.repeat_last_n, int) or self.repeat_last_n < -1:
            raise ValidationError("repeat_last_n", f"must be an integer >= -1, got {self.repeat_last_n!r}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValidationError("presence_penalty", f"must be in [-2, 2], got {self.presence_penalty}")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValidationError("frequency_penalty", f"must be in [-2, 2], got {self.frequency_penalty}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or self.seed < 0):
            raise ValidationError("seed", f"must be an integer >= 0 (or None for random), got {self.seed!r}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20):
            raise ValidationError("logprobs", f"must be an integer in [0, 20], got {self.logprobs!r}")
        for tok, bias in self.logit_bias.items():
            if not isinstance(tok, int) or tok < 0:
                raise ValidationError("logit_bias", f"keys must be token ids >= 0, got {tok!r}")
            finite("logit_bias", bias)
        return self


GRAMMAR_KINDS = ("json_schema", "lark", "regex")


@dataclass(frozen=True)
class Grammar:
    """What the generated text must match, compiled per request by the engine (llguidance).

    kind: "json_schema" (source = the schema as JSON text), "lark" (a Lark grammar) or "regex".
    strict: for json_schema, a keyword the compiler does not implement is an error (False: the
    keyword is ignored, i.e. not enforced). A grammar that does not compile is a ValidationError
    at Engine.submit, field "grammar".
    """

    kind: str
    source: str
    strict: bool = True

    def __post_init__(self) -> None:
        if self.kind not in GRAMMAR_KINDS:
            raise ValidationError("grammar", f"kind must be one of {GRAMMAR_KINDS}, got {self.kind!r}")
        if not isinstance(self.source, str) or not self.source:
            raise ValidationError("grammar", "source must be a non-empty string")

    @classmethod
    def json_schema(cls, schema, strict: bool = True) -> "Grammar":
        """From a JSON Schema (a dict, or its JSON text). {"type": "object"} = any JSON object."""
        import json

        try:
            text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        except RecursionError:
            raise ValidationError("grammar", "the schema nests too deeply to encode") from None
        except (TypeError, ValueError) as e:
            raise ValidationError("grammar", f"the schema is not JSON: {e}") from None
        return cls("json_schema", text, strict)


class FinishReason(str, Enum):
    STOP = "stop"            # end-of-generation token or a stop string
    LENGTH = "length"        # max_tokens reached (or the context is full)
    CANCELLED = "cancelled"  # aborted: client gone or engine.abort
    ERROR = "error"          # the engine failed this request; FinishEvent.error says why


class PromptIds(list):
    """Prompt token ids that carry the embeddings of their image spans: images maps a pixel key
    to (n_rows, n_embd) float32 rows (engine/image_spans.py). A GenerateRequest built from one
    takes its images, so code that passes prompt ids along carries images without knowing."""

    def __init__(self, ids=(), images=None):
        super().__init__(ids)
        self.images = dict(images or {})


@dataclass
class GenerateRequest:
    """One generation. prompt_tokens are final ids (template applied, BOS included if wanted)."""

    prompt_tokens: list[int]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)  # stop strings; never emitted
    ignore_eos: bool = False
    session_id: Optional[str] = None  # optional explicit session pin (Gemini sessionId)
    grammar: Optional[Grammar] = None  # constrain the output token by token (None = free text)
    report_queue: bool = False        # stream QueuedEvents while waiting for a slot
    id: Optional[str] = None          # set by the engine at submit if None
    keep_special: frozenset = frozenset()  # special token ids whose text stays in the output
                                           # (an output format's markers, e.g. <|channel|>)
    # image pixel key -> (n_rows, n_embd) float32 embeddings of the image spans in prompt_tokens
    # (negative ids, see engine/image_spans.py); empty for text
    images: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.images and isinstance(self.prompt_tokens, PromptIds):
            self.images = self.prompt_tokens.images


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV cells were reused, not recomputed

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Wall-clock durations in nanoseconds, measured by the engine."""

    queue_ns: int = 0         # submit -> first scheduled
    prompt_eval_ns: int = 0   # first scheduled -> first token sampled
    eval_ns: int = 0          # first token -> finish
    total_ns: int = 0         # submit -> finish


@dataclass
class TokenLogprob:
    token_id: int
    text: str
    logprob: float


@dataclass
class TokenEvent:
    """One generated token. text is the UTF-8-safe delta released now (may be "")."""

    token_id: int
    text: str
    logprob: Optional[float] = None
    top_logprobs: Optional[list[TokenLogprob]] = None


@dataclass
class QueuedEvent:
    """The request waits for a slot: its 1-based place in the wait queue and how many wait in all.
    Sent only to requests that asked (GenerateRequest.report_queue), when they start waiting and
    each time their place changes; text is always "" (so text-joining consumers can ignore it)."""

    position: int
    pending: int
    text: str = ""


@dataclass
class FinishEvent:
    reason: FinishReason
    usage: Usage
    timings: Timings
    error: Optional[str] = None
    text: str = ""  # text held back for stop detection and released at the end (may be "")


@dataclass
class EngineStats:
    """Queue statistics for /api/queue/status and /metrics. Counts are requests or tokens."""

    busy: bool = False              # any request running or waiting
    running: int = 0                # sequences in the current batch
    pending: int = 0                # requests waiting for a slot
    total_processed: int = 0        # requests finished (any reason) since start
    total_prompt_tokens: int = 0
    total_completion_tokens: int = 0
    total_cached_tokens: int = 0
    n_ctx: int = 0                  # KV cells in the cache
    kv_cells_used: int = 0          # cells holding a running or cached sequence
