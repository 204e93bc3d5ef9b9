"""Slot: one running request bound to one KV sequence id.

Owns: the per-request state the model thread advances each step: the SeqEntry (tokens and
committed cells), prefill progress, the request's Sampler, Detokenizer and grammar matcher, counters and
timestamps (ns). The prompt is entry.tokens[:n_prompt]; generated ids follow it.
Must not: call the native context or emit events (the engine does both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .prefix_cache import SeqEntry
from .request_stream import RequestStream
from ..types import GenerateRequest


@dataclass(eq=False)
class Slot:
    req: GenerateRequest
    stream: RequestStream
    entry: SeqEntry
    n_prompt: int       # prompt length in tokens
    n_cached: int       # prompt tokens reused from the prefix cache
    sampler: Any        # lanner.engine.sampling.Sampler
    detok: Any          # lanner.text.detokenizer.Detokenizer
    t_submit: int       # ns, monotonic
    t_start: int        # ns, admitted (first scheduled)
    grammar: Any = None  # lanner.engine.grammar.GrammarMatcher, or None (free text)
    t_first: int = 0    # ns, first token sampled (0 = not yet)
    n_gen: int = 0      # generated tokens emitted as TokenEvents
    close_at: int = 64  # grammar: look for a closing path once this few tokens are left (0: never)
    close_tries: int = 32  # grammar: closing searches that may still come back empty
    close_ns: int = 50_000_000  # grammar: model-thread time left for closing searches (ns)
    closing: Any = None  # grammar: the forced closing path still to emit (list of ids), or None

    @property
    def seq_id(self) -> int:
        return self.entry.seq_id

    @property
    def prefill_left(self) -> int:
        """Prompt tokens still to decode."""
        return max(self.n_prompt - self.entry.n_cells, 0)

    @property
    def has_pending(self) -> bool:
        """A sampled token waits to be decoded (its cell does not exist yet)."""
        return self.entry.n_cells >= self.n_prompt and len(self.entry.tokens) > self.entry.n_cells
