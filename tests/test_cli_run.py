"""`lanner run` end to end in a subprocess: one-shot -p on both real models, and the
interactive chat driven through stdin (two turns, the second reusing the first's KV cells)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def _run(args: list[str], stdin: str = "", timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lanner.cli", "run", "--threads", "1", "--ctx-size", "512", *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_run_prompt_prints_completion(which, smollm2_file, gemma3_file):
    path = smollm2_file if which == "smollm2" else gemma3_file
    p = _run(["--model", path, "-p", "What is the capital of France?", "-n", "12", "--temperature", "0",
              "--verbose"])
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip()) > 0
    m = re.search(r"\[(\d+) prompt tokens \((\d+) cached\), (\d+) generated", p.stderr)
    assert m and int(m.group(3)) >= 1, p.stderr


def test_run_default_model_raw_greedy_is_deterministic():
    args = ["-p", "The capital of France is", "--raw", "-n", "6", "--temperature", "0"]
    a, b = _run(args), _run(args)
    assert a.returncode == 0 and a.stdout == b.stdout and "Paris" in a.stdout


def test_interactive_chat_over_stdin_keeps_history_in_cache():
    p = _run(["-n", "24", "--temperature", "0", "--verbose"],
             stdin="My name is Bob and I like green tea.\nWhat is my name?\n/exit\n")
    assert p.returncode == 0, p.stderr
    stats = re.findall(r"\[(\d+) prompt tokens \((\d+) cached\), (\d+) generated", p.stderr)
    assert len(stats) == 2, p.stderr
    (p1, c1, g1), (p2, c2, g2) = [tuple(map(int, s)) for s in stats]
    assert c1 == 0
    assert p2 > p1 + g1 - 2  # the second prompt holds the whole first turn ...
    assert c2 >= p1          # ... and at least the first prompt came from the KV cache


def test_end_of_input_exits_cleanly_and_bad_options_are_reported():
    assert _run([], stdin="").returncode == 0
    p = _run(["-p", "x", "--top-p", "1.5"])
    assert p.returncode == 2 and "--top-p" in p.stderr
    p = _run(["--model", "/nonexistent.gguf", "-p", "x"])
    assert p.returncode == 1 and "not found" in p.stderr
