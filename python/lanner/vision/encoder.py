"""ImageEncoder: a loaded projector (mmproj GGUF) that turns images into embedding rows.

Owns: the native VisionModel + VisionEncoder (one encode at a time, under a lock; the GIL is
released inside), a small LRU of embeddings by pixel key (a follow-up turn about the same
image does not encode it again), and the facts the rest needs: rows per image, width,
whether the text model reads an image's rows bidirectionally (Gemma 3).
Must not: decode bytes (image.py) or place tokens (placement.py).
"""

from __future__ import annotations

import collections
import threading
from typing import Optional

import numpy as np
from PIL import Image

from .image import pixel_key
from .preprocess import PixelSpec, to_pixels


class ImageEncoder:
    def __init__(self, path: str, device: str = "", n_threads: int = 0, cache_size: int = 32):
        from .. import _core

        self.model = _core.VisionModel(str(path), device=device)
        self._enc = _core.VisionEncoder(self.model, n_threads=n_threads)
        self.path = str(path)
        self.projector: str = self.model.projector
        self.n_tokens: int = self.model.n_tokens
        self.n_embd: int = self.model.n_embd
        self.bidirectional = self.projector == "gemma3"
        self.spec = PixelSpec(self.projector, self.model.image_size, tuple(self.model.image_mean),
                              tuple(self.model.image_std))
        self._lock = threading.Lock()
        self._cache: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self._cache_size = cache_size
        self.n_encoded = 0  # images actually run through the encoder

    def embed(self, img: Image.Image, key: Optional[int] = None) -> tuple[int, np.ndarray]:
        """(pixel key, (n_tokens, n_embd) float32 rows) of an RGB image."""
        key = pixel_key(img) if key is None else key
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return key, hit
        pixels = to_pixels(img, self.spec)
        with self._lock:
            rows = self._enc.encode(pixels)
            rows.setflags(write=False)
            self.n_encoded += 1
            self._cache[key] = rows
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return key, rows
