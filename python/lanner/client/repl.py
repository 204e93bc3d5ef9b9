"""The interactive chat: streamed replies, history across turns, readline editing and history.

Commands: /clear (forget the history), /system TEXT (set the system instruction; /system alone
removes it), /exit (also /quit); other /words are reported, not sent. Ctrl+C stops the reply
being streamed (or clears the line being typed) and keeps the chat; Ctrl+D (end of input)
leaves. An interrupted or failed turn is not added to the history. On a terminal, lines typed are kept in ~/.lanner_client_history.
Must not: build SDK requests itself (reply.py) or exit the process (main.py decides the code).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, TextIO

from .conversation import Conversation

HISTORY_FILE = "~/.lanner_client_history"
HELP = "commands: /clear  /system TEXT  /exit   (Ctrl+C stops a reply, Ctrl+D leaves)"


def _setup_readline() -> Optional[Callable[[], None]]:
    """Enable line editing and load the history file; returns the function that saves it."""
    try:
        import readline
    except ImportError:  # not on every platform
        return None
    path = os.path.expanduser(HISTORY_FILE)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            readline.write_history_file(path)
        except OSError:
            pass
    return save


def run_repl(send: Callable[[Conversation, str], str], conv: Conversation, banner: str,
             stdin: TextIO, out: TextIO, err: TextIO,
             on_error: Callable[[BaseException], None]) -> int:
    """Read lines until /exit or end of input. `send(conv, text)` streams one reply to `out`
    and returns its text; it raises KeyboardInterrupt on Ctrl+C and API errors on failure
    (reported through `on_error`, the chat goes on)."""
    tty = stdin.isatty()
    save_history = _setup_readline() if tty else None
    if tty:
        err.write(f"{banner}\n{HELP}\n")
        err.flush()
    try:
        while True:
            try:
                line = _read_line(stdin, out, tty)
            except KeyboardInterrupt:  # Ctrl+C while typing: drop the line
                out.write("\n")
                continue
            if line is None:  # Ctrl+D / end of input
                if tty:
                    out.write("\n")
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if line.split()[0] in ("/exit", "/quit", "/bye"):
                    return 0
                _command(line, conv, err)
                continue
            try:
                reply = send(conv, line)
            except KeyboardInterrupt:  # Ctrl+C while streaming: stop this reply only
                out.write("\n")
                err.write("[reply stopped]\n")
                err.flush()
                continue
            except Exception as e:  # the server said no, or it is gone: tell, keep chatting
                out.write("\n")
                on_error(e)
                continue
            conv.record(line, reply)
    finally:
        if save_history:
            save_history()


def _read_line(stdin: TextIO, out: TextIO, tty: bool) -> Optional[str]:
    if tty:
        try:
            return input(">>> ")  # readline editing and history apply to input()
        except EOFError:
            return None
    line = stdin.readline()
    return line if line else None


def _command(line: str, conv: Conversation, err: TextIO) -> None:
    """Handle /clear, /system, /help; anything else is an unknown command (not sent)."""
    name, _, rest = line.partition(" ")
    if name == "/clear":
        conv.clear()
        err.write("[history cleared]\n")
    elif name == "/system":
        conv.set_system(rest.strip())
        err.write("[system instruction set]\n" if conv.system else "[system instruction removed]\n")
    elif name in ("/help", "/?"):
        err.write(HELP + "\n")
    else:
        err.write(f"unknown command {name}; {HELP}\n")
    err.flush()
