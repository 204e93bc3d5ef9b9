"""Image parts of the three dialects -> images on template messages, each failure a 400 naming
the part.

Owns: reading each dialect's image part (Ollama `images`: base64 strings; OpenAI `image_url` /
`input_image` with a `data:` URL - the server fetches nothing, so http(s) URLs are refused;
Gemini `inlineData` / `inline_data` with an image `mimeType`) into an ImagePart (bytes + where
it came from); `message_content` keeps a user message's images at their place among its text
parts; `raw_parts` places the images of an Ollama raw prompt at its `[img-N]` tags. Then, once
per request in `decode_messages`, the checks that need the model: a projector is loaded, the
image count, and each image decoded within the limits (lanner.vision.image). The adapters call
the part readers; request.chat_prompt calls decode_messages. Must not: call the native core or
encode images (the backend does).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Optional

from ..vision.placement import is_image_part
from ..vision.image import MIME_TYPES, ImageError, ImageLimits, decode_image
from .errors import ApiError, bad_request


@dataclass(frozen=True)
class ImagePart:
    data: bytes                 # encoded image
    where: str                  # the request field it came from, for errors
    mime: Optional[str] = None  # as the client declared it


def _b64(text, where: str, field: str = "") -> bytes:
    """where: the part (the 400's param); field: the key inside it, for the message."""
    what = f"{field} " if field else ""
    if not isinstance(text, str) or not text:
        raise bad_request(where, f"{what}must be a non-empty base64 string")
    text = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/")  # URL-safe too (google-genai)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(where, f"{what}is not valid base64") from None


def _image_mime(mime, where: str) -> str:
    if not isinstance(mime, str) or mime.lower() not in MIME_TYPES:
        raise bad_request(where, f"unsupported image type {mime!r} (supported: {', '.join(sorted(MIME_TYPES))})")
    return mime.lower()


# ---- per dialect ----------------------------------------------------------------------------

def ollama_images(obj: dict, where: str) -> list[ImagePart]:
    """Ollama's `images`: a list of base64 strings (generate body, chat message)."""
    items = obj.get("images")
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad_request(where, "must be an array of base64 strings")
    return [ImagePart(_b64(s, f"{where}[{i}]"), f"{where}[{i}]") for i, s in enumerate(items)]


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*)(;base64)?,(.*)", re.S)


def openai_image_part(part: dict, where: str) -> ImagePart:
    """OpenAI `{type: image_url, image_url: {url}}` (or a bare url string, or Responses-style
    `{type: input_image, image_url: "data:..."}`): a data URL only."""
    kind = part.get("type")
    if kind not in ("image_url", "input_image"):
        raise bad_request(where, f"content type {kind!r} is not supported (images: image_url)")
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request(where, "image_url must be a data: URL")
    if re.match(r"(?i)https?:", url):
        raise bad_request(where, "http(s) image URLs are not fetched by this server: send the "
                                 "image inline as a data: URL (data:image/png;base64,...)")
    m = _DATA_URL.fullmatch(url)
    if not m or not url.lower().startswith("data:"):
        raise bad_request(where, "image_url must be a data: URL (data:image/png;base64,...)")
    if not m.group(3):
        raise bad_request(where, "the data: URL must be base64-encoded (;base64,)")
    mime = _image_mime(m.group(1), where) if m.group(1) else None
    return ImagePart(_b64(m.group(4), where, "the data: URL's data"), where, mime)


def gemini_inline_part(part: dict, where: str) -> ImagePart:
    """Gemini `{inlineData: {mimeType, data}}` (snake_case accepted: the caller normalised the
    part's keys; the blob's are read both ways here)."""
    blob = part.get("inlineData")
    if "fileData" in part and blob is None:
        raise bad_request(where, "fileData is not supported: send the image as inlineData")
    if not isinstance(blob, dict):
        raise bad_request(where, "inlineData must be an object with mimeType and data")
    mime = _image_mime(blob.get("mimeType", blob.get("mime_type")), where)
    return ImagePart(_b64(blob.get("data"), where, "inlineData.data"), where, mime)


# ---- their place -----------------------------------------------------------------------------

def message_content(pieces: list, in_place: bool) -> dict:
    """A message's content fields from its text pieces and ImageParts in request order: text
    alone -> {"content": str}; with images and in_place (user messages) -> content parts
    [{"type": "text", "text"}, {"type": "image", "image": ImagePart}, ...] in that order;
    otherwise the text joined and the images in "images" (placed before the text)."""
    images = [p for p in pieces if isinstance(p, ImagePart)]
    text = "".join(p for p in pieces if isinstance(p, str))
    if not images:
        return {"content": text}
    if not in_place:
        return {"content": text, "images": images}
    return {"content": [{"type": "image", "image": p} if isinstance(p, ImagePart) else
                        {"type": "text", "text": p} for p in pieces]}


_IMG_TAG = re.compile(r"\[img-(\d+)\]")


def raw_parts(prompt: str, images: list[ImagePart], param: str = "prompt") -> list:
    """An Ollama raw prompt with images, as Ollama places them: each `[img-N]` tag (N = the
    index in `images`) replaced by image N, and the images no tag names before the prompt.
    A tag naming no image is a 400; so are more tags than the image limit allows (checked
    with the other images in decode_messages)."""
    out: list = []
    named: set[int] = set()
    pos = 0
    for m in _IMG_TAG.finditer(prompt):
        k = int(m.group(1)) if len(m.group(1)) <= 9 else len(images)
        if k >= len(images):
            raise bad_request(param, f"{m.group(0)} names no image: the request has {len(images)} "
                                     f"image(s), tagged [img-0] .. [img-{len(images) - 1}]")
        out += [prompt[pos:m.start()], {"type": "image", "image": images[k]}]
        named.add(k)
        pos = m.end()
    out.append(prompt[pos:])
    first = [{"type": "image", "image": x} for k, x in enumerate(images) if k not in named]
    return first + [p for p in out if p != ""]


# ---- per request ----------------------------------------------------------------------------

def decode_messages(backend, messages: list[dict], param: str) -> list[dict]:
    """Template messages with every ImagePart decoded to an RGB image (other image sources, e.g.
    the web UI's upload paths, pass unchanged). 400 when the model takes no images, when a
    request has more than the limit, and for each image that cannot be used (naming it)."""
    parts = [x for m in messages if isinstance(m, dict) for x in _images_of(m)]
    if not parts:
        return messages
    if not getattr(backend, "supports_images", False):
        raise bad_request(getattr(parts[0], "where", param), "this model does not support images: "
                          "no vision projector (mmproj) is loaded")
    limits = getattr(backend, "image_limits", None) or ImageLimits()
    if len(parts) > limits.max_images:
        raise ApiError(400, f"{param}: {len(parts)} images in one request, over the limit of "
                            f"{limits.max_images}", param=param)
    out = []
    for m in messages:
        if isinstance(m, dict) and m.get("images"):
            m = dict(m, images=[_decode(x, limits) for x in m["images"]])
        if isinstance(m, dict) and isinstance(m.get("content"), list):
            m = dict(m, content=[dict(p, image=_decode(p.get("image"), limits)) if is_image_part(p)
                                 else p for p in m["content"]])
        out.append(m)
    return out


def _images_of(m: dict) -> list:
    """A message's images: its `images`, then the images of its content parts."""
    c = m.get("content")
    inside = [p.get("image") for p in c if is_image_part(p)] if isinstance(c, list) else []
    return list(m.get("images") or []) + inside


def _decode(x, limits: ImageLimits):
    if not isinstance(x, ImagePart):
        return x
    try:
        img = decode_image(x.data, limits)
    except ImageError as e:
        raise bad_request(x.where, str(e)) from None
    return img
