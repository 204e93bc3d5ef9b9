"""A chat's state: the system instruction and the turns so far, as Gemini `contents`.

The whole history is re-sent each turn (the protocol is stateless); a lanner server's prefix
cache reuses the KV cells of the part it has seen, so turn N costs only its new tokens.
Must not: talk to the network.
"""

from __future__ import annotations

from typing import Optional


class Conversation:
    def __init__(self, system: Optional[str] = None):
        self.system = system or None
        self.turns: list[tuple[str, str]] = []  # (role "user" | "model", text)

    def contents_with(self, user_text: str) -> list[dict]:
        """The request's `contents`: the history plus the new user turn (not yet recorded)."""
        turns = self.turns + [("user", user_text)]
        return [{"role": role, "parts": [{"text": text}]} for role, text in turns]

    def record(self, user_text: str, reply: str) -> None:
        self.turns += [("user", user_text), ("model", reply)]

    def clear(self) -> None:
        self.turns = []

    def set_system(self, text: Optional[str]) -> None:
        self.system = text or None
