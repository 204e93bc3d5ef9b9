"""The web UI's upload store: what a file is (by its bytes), and where it is kept.

Owns: sniffing an upload's kind (PNG/JPEG/GIF/WebP image, or UTF-8 text) and checking it
against the declared Content-Type, the server-owned directory (private, created on first use),
content-addressed names (sha256 of the bytes + the kind's extension; a client's filename is
never used), and resolving an id back to a path inside that directory only.
Must not: parse HTTP or multipart (routes_webui.py does) or know any dialect's JSON.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ApiError

MAX_TEXT_FILE_CHARS = 8000  # text inlined into the upload's reply (the spec's MAX_TEXT_FILE_CHARS)

_IMAGE_MAGIC = (  # (prefix, mime, extension)
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
)
_TEXT_DECLARED = ("application/json", "application/xml", "application/x-yaml", "application/toml",
                  "application/javascript", "application/x-sh", "application/sql")
_UNDECLARED = ("", "application/octet-stream")
_ID = re.compile(r"^[0-9a-f]{64}\.(png|jpg|gif|webp|txt)$")


@dataclass
class Upload:
    id: str          # "<sha256>.<ext>": the name under the upload directory
    kind: str        # "image" | "text"
    mime: str        # the sniffed type
    size: int        # bytes
    text: str = ""   # the decoded text (text uploads)


def sniff(data: bytes) -> tuple[str, str, str]:
    """(kind, mime, extension) from the bytes alone; 415 for anything but an image or text."""
    for magic, mime, ext in _IMAGE_MAGIC:
        if data.startswith(magic):
            return "image", mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image", "image/webp", "webp"
    if b"\0" not in data:
        try:
            data.decode("utf-8")
            return "text", "text/plain", "txt"
        except UnicodeDecodeError:
            pass
    raise ApiError(415, "unsupported file: only PNG, JPEG, GIF and WebP images and UTF-8 text "
                        "files can be uploaded")


def check_declared(declared: Optional[str], kind: str, mime: str) -> None:
    """415 when the part's declared Content-Type disagrees with its bytes (an undeclared or
    application/octet-stream part is taken as what its bytes are)."""
    d = (declared or "").split(";")[0].strip().lower()
    if d in _UNDECLARED:
        return
    if kind == "image" and (d == mime or (mime == "image/jpeg" and d == "image/jpg")):
        return
    if kind == "text" and (d.startswith("text/") or d in _TEXT_DECLARED):
        return
    raise ApiError(415, f"the file is declared as {d!r} but its content is {mime}")


class UploadStore:
    """Files under one directory, named by their content. Thread-safe; writes are atomic."""

    def __init__(self, directory: Optional[str], max_bytes: int):
        self._configured = directory
        self._dir: Optional[Path] = None
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        with self._lock:
            if self._dir is None:
                if self._configured:
                    d = Path(self._configured).resolve()
                    d.mkdir(mode=0o700, parents=True, exist_ok=True)
                else:
                    d = Path(tempfile.mkdtemp(prefix="lanner-uploads-"))
                self._dir = d
            return self._dir

    def put(self, data: bytes, declared: Optional[str]) -> Upload:
        if len(data) > self.max_bytes:
            raise ApiError(413, f"the file is {len(data)} bytes; the limit is {self.max_bytes} bytes")
        if not data:
            raise ApiError(400, "file: the uploaded file is empty", param="file")
        kind, mime, ext = sniff(data)
        check_declared(declared, kind, mime)
        uid = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        path = self.directory / uid
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        text = data.decode("utf-8") if kind == "text" else ""
        return Upload(uid, kind, mime, len(data), text)

    def path(self, uid: str) -> Optional[Path]:
        """The stored file for an id from put(), or None (a malformed or unknown id)."""
        if not isinstance(uid, str) or not _ID.match(uid):
            return None
        p = self.directory / uid
        return p if p.is_file() else None
