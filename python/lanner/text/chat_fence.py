"""Message text stays text: a special token's spelling inside a chat message never becomes a
control token (no forged `<|im_end|><|im_start|>system` turns).

Owns: fencing. Before the template renders, each place a message's text (its content, the
strings inside its tool calls, and the tool definitions) spells a token that
parses as special is wrapped in a per-render fence (private-use characters around a random
nonce); after rendering, the text is tokenized piecewise: outside fences with special-token
parsing (the template's own markers), inside fences as the plain characters they are.
Must not: change anything for messages that spell no special token (the same ids as before).
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Optional, Sequence

_TEXT_KEYS = ("content", "reasoning_content", "thinking")  # message fields that hold text
_DEEP_KEYS = ("tool_calls", "name", "tool_name", "tool_call_id")  # fields with text inside


class Fence:
    """One render's fence markers; `pattern` matches the special-token spellings to fence."""

    def __init__(self, pattern: "re.Pattern[str]"):
        nonce = f"{secrets.randbelow(10 ** 16):016d}"  # digits: no template filter changes them
        self.open, self.close = f"\U000F0000{nonce}\U000F0001", f"\U000F0002{nonce}\U000F0003"
        self.pattern = pattern
        self.used = False

    def text(self, s: str) -> str:
        out, n = self.pattern.subn(lambda m: self.open + m.group(0) + self.close, s)
        self.used = self.used or n > 0
        return out

    def value(self, v: Any) -> Any:
        """A message field's value with its text fenced: a string, or content parts."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return [dict(p, text=self.text(p["text"])) if isinstance(p, dict)
                    and isinstance(p.get("text"), str) else p for p in v]
        return v

    def messages(self, messages: Sequence[dict]) -> list[dict]:
        return [{k: (self.value(v) if k in _TEXT_KEYS else self.deep(v) if k in _DEEP_KEYS else v)
                 for k, v in m.items()} if isinstance(m, dict) else m for m in messages]

    def deep(self, v: Any) -> Any:
        """Every string inside v (tool calls' names and arguments, tool definitions) fenced."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.deep(k) if isinstance(k, str) else k: self.deep(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.deep(x) for x in v]
        return v

    def split(self, rendered: str) -> list[tuple[str, bool]]:
        """(segment, fenced) pairs in order; fenced segments are message text. A marker a
        template filter cut in half is dropped, never tokenized."""
        out: list[tuple[str, bool]] = []
        pos = 0
        while True:
            i = rendered.find(self.open, pos)
            j = rendered.find(self.close, i + len(self.open)) if i >= 0 else -1
            if i < 0 or j < 0:
                out.append((rendered[pos:], False))
                break
            out.append((rendered[pos:i], False))
            out.append((rendered[i + len(self.open):j], True))
            pos = j + len(self.close)
        return [(s.replace(self.open, "").replace(self.close, ""), f) for s, f in out if s]


def special_pattern(texts: Sequence[str]) -> Optional["re.Pattern[str]"]:
    """A regex matching any of the special tokens' spellings (longest first); None if none."""
    texts = sorted({t for t in texts if t}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, texts))) if texts else None


def encode_chat(tokenizer, render, messages: Sequence[dict], tools: Optional[list] = None,
                slots: "Optional[re.Pattern[str]]" = None) -> list[int]:
    """Token ids of `render(messages)` (the chat template; `render(messages, tools)` when tools
    are given), message text, tool calls and tool definitions fenced; BOS added once (not when
    the template wrote it). slots: a pattern whose matches in the rendered text (with the slot
    number as group 1) become the placeholder id -(n+1) instead of text (images)."""
    pattern = tokenizer.special_pattern
    fence = Fence(pattern) if pattern is not None else None
    if fence is not None:
        messages = fence.messages(messages)
        tools = fence.deep(tools) if tools is not None else None
    text = render(messages) if tools is None else render(messages, tools)
    bos = tokenizer.bos_text
    add_bos = not (bool(bos) and text.startswith(bos))  # the template wrote BOS itself
    if slots is None and (fence is None or not fence.used):
        return tokenizer.encode(text, add_special=add_bos, parse_special=True)
    pieces = fence.split(text) if fence is not None and fence.used else [(text, False)]
    ids = [i for segment, fenced in pieces for i in _encode_slots(tokenizer, segment, fenced, slots)]
    return tokenizer.add_specials(ids) if add_bos else ids


def _encode_slots(tokenizer, segment: str, fenced: bool, slots) -> list[int]:
    """A segment's ids, each slot marker in it as its placeholder -(n+1)."""
    if slots is None or fenced:
        return tokenizer.encode(segment, add_special=False, parse_special=not fenced)
    out: list[int] = []
    pos = 0
    for m in slots.finditer(segment):
        if m.start() > pos:
            out += tokenizer.encode(segment[pos:m.start()], add_special=False, parse_special=True)
        out.append(-(int(m.group(1)) + 1))
        pos = m.end()
    if pos < len(segment):
        out += tokenizer.encode(segment[pos:], add_special=False, parse_special=True)
    return out
