"""Structured output on the real models: every schema of tests/data/json_schemas.json, greedy and
sampled (temperature 1, three seeds), through the engine's grammar; each output must parse and
validate with `jsonschema`, also where the engine closed it as max_tokens neared. SmolLM2 runs the whole corpus,
Gemma 3 every fifth schema (a larger model and a 262k vocabulary: each step is slower on a CI CPU)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from lanner import LLM  # noqa: E402
from lanner.server.structured import JsonFormat, with_instruction  # noqa: E402
from lanner.types import FinishEvent, GenerateRequest, Grammar, SamplingParams  # noqa: E402

pytestmark = pytest.mark.slow
_TEXT = (Path(__file__).parent / "data" / "json_schemas.json").read_text()
CORPUS = json.loads(_TEXT)
# for validation, numbers as decimals: 4.14 is a multiple of 0.01 (not of the float 0.01)
EXACT = {e["name"]: e["schema"] for e in json.loads(_TEXT, parse_float=Decimal)}
RUNS = [SamplingParams()] + [SamplingParams(temperature=1.0, seed=s) for s in (1, 2, 3)]
MAX_TOKENS = 128
# RFC 3339 (what the grammar's date-time / time formats follow); jsonschema's own "time" check
# without an RFC 3339 package rejects offsets, so these two are checked here
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_RFC3339 = {"time": re.compile(_TIME + "$"),
            "date-time": re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]" + _TIME + "$")}
FORMATS = jsonschema.FormatChecker(formats=("date", "email", "ipv4", "uuid"))
for _name, _rx in _RFC3339.items():
    FORMATS.checks(_name)(lambda v, _rx=_rx: not isinstance(v, str) or bool(_rx.match(v)))


def _prompt(llm: LLM, entry: dict) -> list[int]:
    """The prompt the server would build: the user's request + the JSON instruction."""
    messages = with_instruction([{"role": "user", "content": entry["prompt"]}],
                                JsonFormat(entry["schema"]))
    return llm.chat_tokens(messages)


def _run_corpus(llm: LLM, entries: list[dict], chunk: int = 8) -> list[tuple[str, SamplingParams, str, str]]:
    """(name, sampling, finish reason, text) of every entry x run. Entries go in chunks: the
    greedy runs together, then the sampled ones, whose prompts the prefix cache then holds."""
    out = []
    for i in range(0, len(entries), chunk):
        part = [(e, _prompt(llm, e)) for e in entries[i:i + chunk]]
        for runs in (RUNS[:1], RUNS[1:]):
            jobs = []
            for e, prompt in part:
                for sp in runs:
                    req = GenerateRequest(prompt_tokens=prompt, max_tokens=MAX_TOKENS, sampling=sp,
                                          grammar=Grammar.json_schema(e["schema"], strict=True))
                    jobs.append((e["name"], sp, llm.engine.submit(req)))
            out += [(name, sp, *_collect(stream)) for name, sp, stream in jobs]
    return out


def _collect(stream) -> tuple[str, str]:
    text, reason = [], None
    for ev in stream:
        text.append(ev.text)
        if isinstance(ev, FinishEvent):
            reason = ev.reason.value if ev.error is None else f"error: {ev.error}"
    return reason, "".join(text)


def _check_all(entries: list[dict], results) -> None:
    """Every output is valid JSON matching its schema, exactly: those that ended by themselves
    and those the engine closed because max_tokens was near (finish 'length': the grammar's
    shortest closing path, engine/grammar_closing.py). A greedy output must end by itself."""
    failures, closed = [], []
    for name, sp, reason, text in results:
        where = f"{name} (T={sp.temperature}, seed={sp.seed})"
        if reason not in ("stop", "length") or (reason == "length" and sp.temperature == 0):
            failures.append(f"{where}: finished {reason}: {text!r}")
            continue
        if reason == "length":
            closed.append(f"{where}: {text!r}")
        try:
            value = json.loads(text, parse_float=Decimal)
        except ValueError as e:
            failures.append(f"{where}: not JSON ({e}): {text!r}")
            continue
        v = jsonschema.Draft202012Validator(EXACT[name], format_checker=FORMATS)
        errs = [e.message for e in v.iter_errors(value)]
        if errs:
            failures.append(f"{where}: {errs[:2]} in {text!r}")
    if closed:
        print(f"{len(closed)} sampled outputs were closed at the budget:\n" + "\n".join(closed))
    assert not failures, f"{len(failures)} of {len(results)} outputs failed:\n" + "\n".join(failures)


def test_corpus_is_large_and_valid():
    assert len(CORPUS) >= 60
    assert len({e["name"] for e in CORPUS}) == len(CORPUS)
    for e in CORPUS:
        jsonschema.Draft202012Validator.check_schema(e["schema"])


def test_corpus_smollm2(smollm2_file):
    with LLM(smollm2_file, n_ctx=8192, n_threads=1, n_parallel=8, max_queue=512) as llm:
        results = _run_corpus(llm, CORPUS)
        stats = llm.engine.grammar
        assert len(stats.mask_ns) >= len(results)  # a mask per generated token at least
    _check_all(CORPUS, results)


def test_corpus_gemma3(gemma3_file):
    entries = CORPUS[::5]
    with LLM(gemma3_file, n_ctx=8192, n_threads=1, n_parallel=8, max_queue=512) as llm:
        results = _run_corpus(llm, entries)
    _check_all(entries, results)
