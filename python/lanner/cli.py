"""`lanner` command line: `serve` (the API under gunicorn), `run` (generate or chat locally) and
`client` (chat with a lanner server or the public Gemini API; lanner.client).

Owns: argument parsing and the terminal experience (progress while loading, streaming output,
the interactive chat loop). Must not: implement generation or serving; it calls lanner.LLM and
lanner.server.main.

    lanner serve [--model PATH] [--port 8080] ...
    lanner run [--model PATH] [-p PROMPT] [--temperature T] ...   # no -p: interactive chat
    lanner client [--host H --port P | --api_key KEY] [--prompt TEXT | --interactive 1]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Optional, TextIO

from . import __version__
from .types import SamplingParams, ValidationError

_D = SamplingParams()  # the defaults shown in --help


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="generate from a prompt, or chat interactively",
                       description="Generate from -p PROMPT and exit, or (without -p) chat; "
                                   "type /exit or Ctrl-D to leave.")
    p.add_argument("--model", "-m", help="GGUF file (default: $LANNER_MODEL or the embedded SmolLM2)")
    p.add_argument("-p", "--prompt", help="complete this prompt and exit")
    p.add_argument("--raw", action="store_true",
                   help="with -p: continue the text as is instead of applying the chat template")
    p.add_argument("--system", help="system prompt for chat")
    p.add_argument("-n", "--max-tokens", type=int, default=512, help="tokens per reply (default 512)")
    p.add_argument("--ctx-size", type=int, default=4096, help="KV cache size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available, fewer while fewer are faster)")
    p.add_argument("--temperature", type=float, default=_D.temperature)
    p.add_argument("--top-k", type=int, default=_D.top_k)
    p.add_argument("--top-p", type=float, default=_D.top_p)
    p.add_argument("--min-p", type=float, default=_D.min_p)
    p.add_argument("--repeat-penalty", type=float, default=_D.repeat_penalty)
    p.add_argument("--presence-penalty", type=float, default=_D.presence_penalty)
    p.add_argument("--frequency-penalty", type=float, default=_D.frequency_penalty)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--verbose", action="store_true", help="print token counts and speed after each reply")


def _sampling(args) -> dict:
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repeat_penalty=args.repeat_penalty, presence_penalty=args.presence_penalty,
                frequency_penalty=args.frequency_penalty, seed=args.seed, stop=args.stop)


def _load(args, err: TextIO):
    """Load the model with a spinner on stderr (only when stderr is a terminal)."""
    from .llm import LLM

    done = threading.Event()

    def spin():
        frames, i, t0 = "|/-\\", 0, time.time()
        while not done.wait(0.1):
            err.write(f"\rloading model {frames[i % 4]} {time.time() - t0:.1f}s")
            err.flush()
            i += 1
        err.write("\r\033[K")
        err.flush()

    spinner = threading.Thread(target=spin, daemon=True) if err.isatty() else None
    if spinner:
        spinner.start()
    try:
        return LLM(args.model, n_ctx=args.ctx_size, n_threads=args.threads, n_parallel=1)
    finally:
        done.set()
        if spinner:
            spinner.join()


def _print_stream(chunks, out: TextIO, verbose: bool, err: TextIO) -> str:
    text = []
    for ch in chunks:
        out.write(ch.text)
        out.flush()
        text.append(ch.text)
        if ch.finish_reason is not None and verbose:
            u, t = ch.usage, ch.timings
            speed = (u.completion_tokens - 1) / (t.eval_ns / 1e9) if t.eval_ns and u.completion_tokens > 1 else 0.0
            err.write(f"\n[{u.prompt_tokens} prompt tokens ({u.cached_tokens} cached), "
                      f"{u.completion_tokens} generated, {speed:.1f} tok/s, finish: {ch.finish_reason}]")
    out.write("\n")
    out.flush()
    return "".join(text)


def run_main(args, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        SamplingParams(**{k: v for k, v in _sampling(args).items() if k != "stop" and v is not None})
    except ValidationError as e:
        err.write(f"lanner run: invalid --{e.field.replace('_', '-')}: {e}\n")
        return 2
    try:
        llm = _load(args, err)
    except (FileNotFoundError, ValueError) as e:
        err.write(f"lanner run: {e}\n")
        return 1
    opts = _sampling(args)
    try:
        if args.prompt is not None:
            if args.raw:
                chunks = llm.generate(args.prompt, args.max_tokens, stream=True, **opts)
            else:
                msgs = ([{"role": "system", "content": args.system}] if args.system else [])
                msgs.append({"role": "user", "content": args.prompt})
                chunks = llm.chat(msgs, args.max_tokens, stream=True, **opts)
            _print_stream(chunks, out, args.verbose, err)
            return 0
        return _chat_loop(llm, args, opts, stdin, out, err)
    finally:
        llm.close()


def _chat_loop(llm, args, opts, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """Multi-turn chat. The history is re-sent each turn; the engine's prefix cache keeps its KV
    cells, so only the new turn's tokens are computed."""
    history = [{"role": "system", "content": args.system}] if args.system else []
    interactive = stdin.isatty()
    if interactive:
        err.write(f"lanner {__version__} · {llm.model_name} · /exit or Ctrl-D to quit\n")
    while True:
        if interactive:
            out.write(">>> ")
            out.flush()
        line = stdin.readline()
        if not line:  # Ctrl-D / end of input
            if interactive:
                out.write("\n")
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit", "/bye"):
            return 0
        history.append({"role": "user", "content": line})
        try:
            reply = _print_stream(llm.chat(history, args.max_tokens, stream=True, **opts), out, args.verbose, err)
        except KeyboardInterrupt:  # Ctrl-C stops this reply (the stream's close aborts it), not the chat
            out.write("\n")
            history.pop()
            continue
        except ValueError as e:  # context overflow and the like: tell, keep chatting
            err.write(f"error: {e}\n")
            history.pop()
            continue
        history.append({"role": "assistant", "content": reply})


def main(argv: Optional[list[str]] = None) -> int:
    from .client.options import add_client_parser
    from .server.main import add_serve_parser, run_serve

    parser = argparse.ArgumentParser(prog="lanner", description="Local LLM inference engine and server.")
    parser.add_argument("--version", action="version", version=f"lanner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    _add_run_parser(sub)
    add_client_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "client":
        from .client.main import client_main

        return client_main(args)
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
