"""Where an image's tokens go in a prompt, per model family.

Owns: marking each image's place in its message (`mark_messages`: a message's `images` first,
then each `{"type": "image", "image": X}` content part where it stands, the content joined into
one string with a slot marker per image) and expanding each image slot of the tokenized chat (a
negative placeholder -(k+1) for the k-th image, from text/chat_fence.encode_chat) into the
family's form: Gemma 3 `<start_of_image>` + the image's rows + `<end_of_image>`; LLaVA-style
projectors the rows alone. The rows are the image-span ids of engine/image_spans.py, keyed by
pixels. Must not: decode or encode images.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Sequence

from ..engine.image_spans import span_ids

class SlotMarkers:
    """One render's image slot markers: private-use characters around a random nonce and the
    slot's number, so text a user typed never becomes an image slot."""

    def __init__(self):
        nonce = f"{secrets.randbelow(10 ** 16):016d}"
        self._open, self._close = f"\U000F0004{nonce}:", "\U000F0005"
        self.pattern = re.compile(re.escape(self._open) + r"(\d+)" + re.escape(self._close))

    def marker(self, k: int) -> str:
        """The text standing for image k in a message's content until the prompt is tokenized."""
        return f"{self._open}{k}{self._close}"


def slot_markers() -> SlotMarkers:
    return SlotMarkers()


def is_image_part(p: Any) -> bool:
    return isinstance(p, dict) and p.get("type") == "image"


def has_images(m: Any) -> bool:
    """Whether a message carries images (an `images` list or image parts in its content)."""
    if not isinstance(m, dict):
        return False
    c = m.get("content")
    return bool(m.get("images")) or (isinstance(c, list) and any(map(is_image_part, c)))


def mark_messages(messages: Sequence[Any], slots: SlotMarkers) -> tuple[list, list]:
    """(messages with each image replaced by its slot marker, the images in slot order).
    A message with images gets string content (templates that take a string get one): the
    markers of its `images` first (Ollama's and the web UI's order), then its content's text
    and image parts in their order. Messages without images pass unchanged."""
    marked: list = []
    images: list = []

    def slot(x) -> str:
        if x is None:
            raise ValueError("an image part has no image")
        images.append(x)
        return slots.marker(len(images) - 1)

    for m in messages:
        if not has_images(m):
            marked.append(m)
            continue
        pieces = [slot(x) for x in m.get("images") or []]
        c = m.get("content")
        for i, p in enumerate(c if isinstance(c, list) else [c or ""]):
            if isinstance(p, str):
                pieces.append(p)
            elif is_image_part(p):
                pieces.append(slot(p.get("image")))
            elif isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                pieces.append(p["text"])
            else:
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise ValueError(f"content part {i} of type {kind!r} is not supported (text, image)")
        marked.append({k: v for k, v in m.items() if k != "images"} | {"content": "".join(pieces)})
    return marked, images


def wrapper_ids(projector: str, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids before and after an image's rows."""
    if projector != "gemma3":
        return [], []
    ids = [tokenizer.token_to_id(t) for t in ("<start_of_image>", "<end_of_image>")]
    if any(i is None for i in ids):
        raise ValueError("this Gemma 3 vocabulary lacks <start_of_image>/<end_of_image>")
    return [ids[0]], [ids[1]]


def expand(ids: Sequence[int], images: Sequence[tuple[int, int]], before: list[int],
           after: list[int]) -> list[int]:
    """ids with each slot -(k+1) replaced by before + span(images[k]) + after;
    images[k] = (pixel key, rows)."""
    out: list[int] = []
    for t in ids:
        if t >= 0:
            out.append(t)
            continue
        key, n = images[-t - 1]
        out += before + span_ids(key, n) + after
    return out
