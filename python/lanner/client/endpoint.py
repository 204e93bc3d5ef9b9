"""Where `lanner client` connects: a local `lanner serve` or the public Google API, the SDK
client for it, and the model name to use.

Rules: without --host/--port, `--api_key` or $GOOGLE_API_KEY selects the public API, at
--base-url / $GOOGLE_GEMINI_BASE_URL / Google's default. Otherwise the local server at
http://HOST:PORT (or --base-url) gets `--api_key` or $LANNER_API_KEY (a `lanner serve --api-key`
server), else a placeholder: $GOOGLE_API_KEY never leaves for a local server. The model
defaults to the local server's (GET /v1beta/models) or PUBLIC_MODEL.
Must not: print anything; the key lives only in the SDK client's header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .options import DEFAULT_HOST, DEFAULT_PORT

PUBLIC_MODEL = "gemini-2.5-flash"
LOCAL_KEY = "lanner-local"  # the SDK insists on a key; a lanner serve without --api-key ignores it
API_VERSION = "v1beta"


class ClientSetupError(Exception):
    """The client cannot start (SDK missing, bad flags); the message is for the user."""


def import_genai():
    """google.genai, or ClientSetupError telling how to install it."""
    try:
        from google import genai
        from google.genai import types
    except ImportError:
        raise ClientSetupError("`lanner client` needs Google's google-genai SDK: "
                               "pip install 'lanner[client]'  (or: pip install google-genai)") from None
    return genai, types


@dataclass
class Endpoint:
    base_url: Optional[str]                     # None = the SDK's default (Google's public API)
    api_key: Optional[str] = field(default=None, repr=False)  # None = local server
    public: bool = False

    @property
    def label(self) -> str:
        """Where we talk to, for messages (never includes the key)."""
        return self.base_url or "the public Google API"


def _url(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):  # IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}"


def resolve_endpoint(args, environ: Optional[Mapping[str, str]] = None) -> Endpoint:
    env = os.environ if environ is None else environ
    if args.api_key is not None and not args.api_key.strip():
        raise ClientSetupError("the API key is empty")
    local = args.host is not None or args.port is not None
    key = args.api_key if local else (args.api_key or env.get("GOOGLE_API_KEY") or None)
    if not local and key is not None:
        return Endpoint(args.base_url or env.get("GOOGLE_GEMINI_BASE_URL") or None, key, public=True)
    if args.port is not None and not 0 < args.port < 65536:
        raise ClientSetupError(f"--port must be in 1..65535, got {args.port}")
    url = args.base_url or _url(args.host or DEFAULT_HOST, args.port or DEFAULT_PORT)
    return Endpoint(url, key or env.get("LANNER_API_KEY") or None, public=False)


def make_client(ep: Endpoint, timeout_s: float):
    """A google.genai.Client for `ep` (no retries: errors are reported at once)."""
    genai, types = import_genai()
    opts = {"api_version": API_VERSION, "timeout": int(timeout_s * 1000)}
    if ep.base_url:
        opts["base_url"] = ep.base_url
    return genai.Client(api_key=ep.api_key or LOCAL_KEY, http_options=types.HttpOptions(**opts))


def resolve_model(client, ep: Endpoint, requested: Optional[str]) -> str:
    """--model as given; else the public default, or the first model the local server lists."""
    if requested:
        return requested[len("models/"):] if requested.startswith("models/") else requested
    if ep.public:
        return PUBLIC_MODEL
    for m in client.models.list():
        name = m.name or ""
        return name[len("models/"):] if name.startswith("models/") else name
    raise ClientSetupError(f"{ep.label} lists no models")
