"""One streamed generation: the request's config from the flags, the reply's text written to
`out` as it arrives, and what the server reported at the end (finish reason, token counts).

Ctrl+C (KeyboardInterrupt) while streaming closes the HTTP stream, which cancels the request
on a lanner server, and is re-raised for the caller to decide (the REPL keeps going).
Must not: keep history (conversation.py) or catch API errors (main.py reports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, TextIO

from .endpoint import import_genai


@dataclass
class ReplyInfo:
    text: str
    finish_reason: Optional[str] = None  # "STOP", "MAX_TOKENS", ...
    prompt_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None
    output_tokens: Optional[int] = None


def generation_config(args, system: Optional[str]):
    """GenerateContentConfig from the generation flags; unset flags are left to the server."""
    _, types = import_genai()
    values = {"system_instruction": system, "temperature": args.temperature, "top_p": args.top_p,
              "top_k": args.top_k, "max_output_tokens": args.max_output_tokens, "seed": args.seed}
    return types.GenerateContentConfig(**{k: v for k, v in values.items() if v is not None})


def stream_reply(client, model: str, contents: list[dict], config, out: TextIO) -> ReplyInfo:
    stream = client.models.generate_content_stream(model=model, contents=contents, config=config)
    info = ReplyInfo("")
    parts = []
    try:
        for chunk in stream:
            text = _chunk_text(chunk)
            if text:
                out.write(text)
                out.flush()
                parts.append(text)
            cand = chunk.candidates[0] if chunk.candidates else None
            if cand is not None and cand.finish_reason is not None:
                info.finish_reason = getattr(cand.finish_reason, "value", str(cand.finish_reason))
            u = chunk.usage_metadata
            if u is not None and u.prompt_token_count is not None:
                info.prompt_tokens = u.prompt_token_count
                info.cached_tokens = u.cached_content_token_count or 0
                info.output_tokens = u.candidates_token_count
    finally:
        stream.close()  # on Ctrl+C or an error: drop the connection, the server cancels
        info.text = "".join(parts)
    return info


def _chunk_text(chunk) -> str:
    """The chunk's answer text (thought parts skipped) without the SDK's non-text warnings."""
    if not chunk.candidates or chunk.candidates[0].content is None:
        return ""
    return "".join(p.text for p in (chunk.candidates[0].content.parts or [])
                   if p.text and not p.thought)
