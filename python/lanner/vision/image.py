"""Image bytes -> a checked RGB Pillow image, and the pixel key that names it.

Owns: the limits every image passes before anything else sees it: bytes, pixels (checked from
the header before the pixels are decoded; Pillow's decompression-bomb guard stays on), formats
(PNG, JPEG, WebP, GIF: its first frame), and undecodable or truncated data. Failures are
ImageError with a message fit for a 400. Must not: call the native core or know a dialect.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MIME_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP",
              "image/gif": "GIF"}


class ImageError(ValueError):
    """An image that cannot be used; the message says why (no pixels or paths in it)."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024     # encoded size
    max_pixels: int = 50_000_000          # width * height
    max_images: int = 16                  # per request


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Encoded bytes -> RGB image (a GIF's first frame), within `limits`."""
    if len(data) == 0:
        raise ImageError("image is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ImageError(f"image is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
            img.seek(0)
            img.load()
            return img.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image is too large to decode safely ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"image data is truncated or corrupt ({type(e).__name__})") from None


def pixel_key(img: Image.Image) -> int:
    """A 46-bit key of the decoded pixels (size included): equal pixels, equal key."""
    h = hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.tobytes()).digest()
    return int.from_bytes(h[:6], "little") >> 2
