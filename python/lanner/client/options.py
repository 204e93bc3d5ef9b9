"""`lanner client` flags, in both spellings the spec and habit use (`--api_key` / `--api-key`,
`--interactive 1` / `--interactive` / `-i`).

Owns: the argument parser only. Must not: import google-genai (the parser works without it).
"""

from __future__ import annotations

import argparse

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8080


def _interactive(value: str) -> int:
    """`--interactive 1|0` (the spec) or bare `--interactive` / `-i` (const=1)."""
    if value not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"must be 0 or 1, got {value!r}")
    return int(value)


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where to connect")
    where.add_argument("--host", default=None, help=f"local server host (default {DEFAULT_HOST})")
    where.add_argument("--port", type=int, default=None, help=f"local server port (default {DEFAULT_PORT})")
    where.add_argument("--api-key", "--api_key", dest="api_key", default=None,
                       help="use the public Google API with this key (default: $GOOGLE_API_KEY); "
                            "with --host/--port: the key of a `lanner serve --api-key` server "
                            "(default: $LANNER_API_KEY)")
    where.add_argument("--base-url", "--base_url", dest="base_url", default=None,
                       help="API base URL (public mode default: $GOOGLE_GEMINI_BASE_URL, else "
                            "Google's; local mode default: http://HOST:PORT)")
    where.add_argument("--model", "-m", default=None,
                       help="model name (default: the local server's model; gemini-2.5-flash "
                            "for the public API)")
    where.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")

    what = p.add_argument_group("what to do")
    what.add_argument("--prompt", "-p", default=None, help="send this prompt, print the streamed reply, exit")
    what.add_argument("--interactive", "-i", type=_interactive, nargs="?", const=1, default=None,
                      help="chat (1) or not (0); the default is to chat when no --prompt is given")
    what.add_argument("--verbose", action="store_true",
                      help="print token counts (prompt, cached, generated) after each reply on stderr")

    gen = p.add_argument_group("generation (unset = the server's defaults)")
    gen.add_argument("--system", default=None, help="system instruction")
    gen.add_argument("--temperature", type=float, default=None)
    gen.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=None)
    gen.add_argument("--top-k", "--top_k", dest="top_k", type=int, default=None)
    gen.add_argument("--max-output-tokens", "--max_output_tokens", dest="max_output_tokens",
                     type=int, default=None)
    gen.add_argument("--seed", type=int, default=None)


def add_client_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "client", help="chat with a lanner server or the public Gemini API",
        description="A Gemini-protocol client (google-genai SDK). Without an API key it talks to "
                    "`lanner serve` at --host/--port; with --api_key or $GOOGLE_API_KEY to the "
                    "public Google API. In the chat: /clear, /system TEXT, /exit; Ctrl+C stops "
                    "a reply, Ctrl+D leaves.")
    add_client_arguments(p)
    return p
