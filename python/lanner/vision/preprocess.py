"""RGB image -> the projector's input: (3, S, S) float32, planar, normalised.

Owns: resizing as each projector type expects (gemma3: stretched to S x S, bilinear; mlp /
LLaVA: padded to a square with the mean colour, then bicubic) and normalisation with the
file's image_mean / image_std. Must not: decode bytes or call the native core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class PixelSpec:
    projector: str            # clip.projector_type
    image_size: int           # S
    mean: tuple               # per channel, in [0, 1]
    std: tuple


def to_pixels(img: Image.Image, spec: PixelSpec) -> np.ndarray:
    s = spec.image_size
    if spec.projector == "mlp":  # keep the aspect ratio: pad to a square first
        side = max(img.width, img.height)
        fill = tuple(int(round(255 * m)) for m in spec.mean)
        sq = Image.new("RGB", (side, side), fill)
        sq.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = sq.resize((s, s), Image.Resampling.BICUBIC)
    else:
        img = img.resize((s, s), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0  # (S, S, 3)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, S, S)
