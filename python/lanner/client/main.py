"""`lanner client` entry: check the flags, connect, then one prompt (exit 0, or 1 with the
error on stderr) or the interactive chat.

Exit codes: 0 done; 1 the request failed (HTTP error, server unreachable); 2 bad flags or the
SDK is missing; 130 Ctrl+C during a --prompt reply. Every message that reaches the terminal
passes through _redact, so the API key cannot appear in it.
Must not: build requests (reply.py) or hold the chat loop (repl.py).
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from .conversation import Conversation
from .endpoint import ClientSetupError, Endpoint, import_genai, make_client, resolve_endpoint, resolve_model
from .reply import ReplyInfo, generation_config, stream_reply
from .repl import run_repl


def _check_flags(args) -> None:
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise ClientSetupError(f"--temperature must be in [0, 2], got {args.temperature}")
    if args.top_p is not None and not 0 <= args.top_p <= 1:
        raise ClientSetupError(f"--top-p must be in [0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 0:
        raise ClientSetupError(f"--top-k must be >= 0, got {args.top_k}")
    if args.max_output_tokens is not None and args.max_output_tokens < 1:
        raise ClientSetupError(f"--max-output-tokens must be >= 1, got {args.max_output_tokens}")
    if args.interactive == 0 and args.prompt is None:
        raise ClientSetupError("nothing to do: give --prompt TEXT, or --interactive 1")


def _redact(text: str, ep: Optional[Endpoint]) -> str:
    key = ep.api_key if ep is not None else None
    return text.replace(key, "***") if key else text


def _is_transport_error(e: BaseException) -> bool:
    """A connection-level failure from the SDK's HTTP stack (httpx, or the httpx2 fork newer
    google-genai versions use), or a plain OSError."""
    names = {c.__name__ for c in type(e).__mro__}
    return "TransportError" in names or isinstance(e, OSError)


def describe_error(e: BaseException, ep: Endpoint) -> str:
    """One line for the user: the server's status and message, or why it is unreachable."""
    genai_errors = sys.modules.get("google.genai.errors")
    if genai_errors is not None and isinstance(e, genai_errors.APIError):
        msg = f"{ep.label} answered {e.code} {e.status or ''}: {e.message or e.details}"
        if e.code in (401, 403) and not ep.public and not ep.api_key:
            msg += " (this server wants an API key: --api_key KEY or $LANNER_API_KEY)"
    elif _is_transport_error(e):
        hint = "" if ep.public else " (is `lanner serve` running there?)"
        msg = f"cannot reach {ep.label}: {type(e).__name__}: {e}{hint}"
    else:
        msg = f"{type(e).__name__}: {e}"
    return _redact(msg, ep)


def _usage_line(info: ReplyInfo) -> str:
    return (f"[{info.prompt_tokens} prompt tokens ({info.cached_tokens} cached), "
            f"{info.output_tokens} generated, finish: {info.finish_reason}]")


def client_main(args, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    ep = None
    try:
        _check_flags(args)
        import_genai()
        ep = resolve_endpoint(args)
        client = make_client(ep, args.timeout)
        model = resolve_model(client, ep, args.model)
    except ClientSetupError as e:
        err.write(f"lanner client: {_redact(str(e), ep)}\n")
        return 2
    except Exception as e:  # listing the local server's model failed
        err.write(f"lanner client: {describe_error(e, ep)}\n")
        return 1

    conv = Conversation(args.system)

    def send(conversation: Conversation, text: str) -> str:
        config = generation_config(args, conversation.system)
        info = stream_reply(client, model, conversation.contents_with(text), config, out)
        out.write("\n")
        out.flush()
        if args.verbose:
            err.write(_usage_line(info) + "\n")
            err.flush()
        return info.text

    def report(e: BaseException) -> None:
        err.write(f"error: {describe_error(e, ep)}\n")
        err.flush()

    if args.prompt is not None:
        try:
            reply = send(conv, args.prompt)
        except KeyboardInterrupt:
            out.write("\n")
            return 130
        except Exception as e:
            out.write("\n")
            err.write(f"lanner client: {describe_error(e, ep)}\n")
            return 1
        if not args.interactive:
            return 0
        conv.record(args.prompt, reply)
    where = "public Google API" if ep.public else ep.label
    return run_repl(send, conv, f"lanner client · {model} @ {where}", stdin, out, err, report)
