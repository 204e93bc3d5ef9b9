"""Where an image's tokens go in a prompt, per model family.

Owns: expanding each image slot of a tokenized chat (a negative placeholder -(k+1) for the k-th
image, from text/chat_fence.encode_chat_parts) into the family's form: Gemma 3
`<start_of_image>` + the image's rows + `<end_of_image>`; LLaVA-style projectors the rows alone.
The rows are the image-span ids of engine/image_spans.py, keyed by pixels.
Must not: decode or encode images.
"""

from __future__ import annotations

import re
import secrets
from typing import Sequence

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
