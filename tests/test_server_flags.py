"""`lanner serve` server-wide flags: the sampling defaults (--temperature ... --stop and their
LANNER_* variables) reach every dialect's bare requests and yield to a request's own values;
--backend picks a ggml backend or fails at startup; --max-queue 0 serves an idle server and
503s a busy one. In-process on the fake backend, then end to end on SmolLM2."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

from fake_backend import FakeLLM
from lanner.server.settings import Settings
from serve_process import lanner_serve
from server_helpers import make_client

FAKE = "fake-model.Q4_0"
FLAGS = dict(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1,
             presence_penalty=0.5, frequency_penalty=0.25, seed=42, stop=["END", "STOP"])
USER = [{"role": "user", "content": "hi"}]
BARE = {  # one request per dialect and endpoint that sets no sampling option at all
    "ollama generate": ("/api/generate", {"prompt": "hi", "stream": False}),
    "ollama chat": ("/api/chat", {"messages": USER, "stream": False}),
    "openai chat": ("/v1/chat/completions", {"messages": USER}),
    "openai completions": ("/v1/completions", {"prompt": "hi"}),
    "gemini": (f"/v1beta/models/{FAKE}:generateContent", {"contents": "hi"}),
}


def _sampled(s) -> dict:
    return {k: getattr(s, k) for k in FLAGS if k != "stop"}


def test_flags_reach_every_dialects_bare_requests():
    llm = FakeLLM()
    c = make_client(llm, **FLAGS)
    for name, (path, body) in BARE.items():
        assert c.simulate_post(path, json=body).status_code == 200, name
        req = llm.engine.submitted[-1]
        got, want = _sampled(req.sampling), {k: v for k, v in FLAGS.items() if k != "stop"}
        assert got == want, name
        assert req.stop == ["END", "STOP"], name


def test_without_flags_bare_requests_keep_the_spec_defaults_and_requests_win():
    llm = FakeLLM()
    c = make_client(llm)
    c.simulate_post(*BARE["ollama generate"][:1], json=BARE["ollama generate"][1])
    s = llm.engine.submitted[-1]
    assert (s.sampling.temperature, s.sampling.top_k, s.sampling.seed, s.stop) == (0.0, 0, None, [])

    c = make_client(llm, **FLAGS)
    c.simulate_post("/api/generate", json={"prompt": "hi", "stream": False, "options": {
        "temperature": 0, "top_k": 3, "seed": 5, "stop": ["x"]}})
    s = llm.engine.submitted[-1]
    assert (s.sampling.temperature, s.sampling.top_k, s.sampling.seed, s.stop) == (0.0, 3, 5, ["x"])
    assert s.sampling.top_p == 0.9  # what the request left unset still comes from the server
    c.simulate_post("/v1/chat/completions", json={"messages": USER, "temperature": 1.3, "stop": "y"})
    s = llm.engine.submitted[-1]
    assert (s.sampling.temperature, s.sampling.min_p, s.stop) == (1.3, 0.05, ["y"])


def test_settings_from_flags_and_variables():
    env = {"LANNER_TEMPERATURE": "0.5", "LANNER_TOP_K": "20", "LANNER_SEED": "9",
           "LANNER_STOP": '["a", "b"]', "LANNER_BACKEND": "GGML_CPU", "LANNER_MIN_P": ""}
    s = Settings.from_env(env, top_k=30)
    assert (s.temperature, s.top_k, s.seed, s.stop, s.backend, s.min_p) == (0.5, 30, 9, ["a", "b"], "cpu", None)
    assert Settings.from_env({"LANNER_STOP": "###"}).stop == ["###"]
    with pytest.raises(ValueError, match="LANNER_TOP_P must be a number"):
        Settings.from_env({"LANNER_TOP_P": "high"})
    with pytest.raises(ValueError, match="--top-p"):
        Settings.from_env({}, top_p=1.5)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        Settings.from_env({"LANNER_BACKEND": "tpu"})
    # per-dialect starting points: the spec's tables unless the server sets its own
    plain = Settings()
    assert (plain.sampling_defaults("gemini").temperature, plain.sampling_defaults("gemini").top_k) == (1.0, 1)
    assert plain.sampling_defaults("ollama").temperature == 0.0
    warm = Settings(temperature=0.7)  # must sample in Gemini too, not stay greedy under topK 1
    assert (warm.sampling_defaults("gemini").temperature, warm.sampling_defaults("gemini").top_k) == (0.7, 0)
    assert (plain.default_max_tokens("gemini"), plain.default_max_tokens("openai"), plain.max_tokens) == (8192, 200, 200)
    assert Settings(max_tokens=64).default_max_tokens("gemini") == 64  # --max-tokens overrides all
    assert warm.sampling_defaults("ollama").temperature == 0.7


def test_serve_flags_parse_into_settings(tmp_path, monkeypatch):
    import argparse

    import lanner.server.main as main
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    seen = {}
    monkeypatch.setattr(main.LannerServer, "run", lambda self: seen.setdefault("s", self.settings))
    p = argparse.ArgumentParser()
    main.add_serve_parser(p.add_subparsers())
    args = p.parse_args(["serve", "--model", str(model), "--temperature", "0.3", "--top-k", "7",
                         "--top-p", "0.8", "--min-p", "0.1", "--repeat-penalty", "1.2",
                         "--presence-penalty", "0.4", "--frequency-penalty", "-0.3", "--seed", "11",
                         "--stop", "A", "--stop", "B", "--backend", "cpu", "--max-queue", "0"])
    assert args.func(args) == 0
    s = seen["s"]
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.presence_penalty,
            s.frequency_penalty, s.seed, s.stop, s.backend, s.max_queue) == \
        (0.3, 7, 0.8, 0.1, 1.2, 0.4, -0.3, 11, ["A", "B"], "cpu", 0)


# ---- end to end: lanner serve with SmolLM2 ----

QUESTION = "What is the capital of France?"
STOP = "Marseillaise"  # in SmolLM2's greedy answer (24 tokens) to QUESTION, not at its start


def _ollama(url: str, options: dict | None = None) -> str:
    body = {"prompt": QUESTION, "stream": False, **({"options": options} if options else {})}
    r = requests.post(url + "/api/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["response"]


def _openai(url: str, **fields) -> str:
    r = requests.post(url + "/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": QUESTION}], **fields})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def _gemini(url: str, config: dict) -> str:
    r = requests.post(url + "/v1beta/models/SmolLM2-135M-Instruct.Q4_1:generateContent", timeout=120,
                      json={"contents": [{"parts": [{"text": QUESTION}]}], "generationConfig": config})
    assert r.status_code == 200, r.text
    return r.json()["candidates"][0]["content"]["parts"][0]["text"]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    with lanner_serve(tmp_path_factory.mktemp("plain")) as (url, _):
        yield url


@pytest.mark.slow
def test_sampling_flags_change_bare_requests_end_to_end(plain_server, tmp_path):
    greedy_ollama, greedy_openai = _ollama(plain_server), _openai(plain_server)
    greedy_gemini = _gemini(plain_server, {"temperature": 0})
    assert all(greedy.index(STOP) > 0 for greedy in (greedy_ollama, greedy_openai, greedy_gemini))
    flags = ["--temperature", "1.0", "--top-k", "40", "--seed", "1234", "--stop", STOP,
             "--backend", "cpu"]
    with lanner_serve(tmp_path, *flags) as (url, _):
        # --temperature + --seed: a bare request samples, and reproducibly
        a, b = _ollama(url), _ollama(url)
        assert a == b and a != greedy_ollama
        c, d = _openai(url), _openai(url)
        assert c == d and c != greedy_openai
        # --stop: a greedy request that sets no stop strings ends before STOP in every dialect
        for got, full in ((_ollama(url, {"temperature": 0}), greedy_ollama),
                          (_openai(url, temperature=0), greedy_openai),
                          (_gemini(url, {"temperature": 0}), greedy_gemini)):
            assert got == full[:full.index(STOP)]
        # a request's own options still win: no stop string of the server's, greedy
        r = requests.post(url + "/api/generate", timeout=120, json={
            "prompt": QUESTION, "stream": False, "options": {"temperature": 0, "stop": ["\n\n\n"]}})
        assert r.json()["response"] == greedy_ollama


def test_backend_not_in_this_build_is_a_startup_error():
    from lanner.backends import available_backends

    assert "cuda" not in available_backends()  # this test is about a CPU-only build
    r = subprocess.run([sys.executable, "-m", "lanner.cli", "serve", "--backend", "cuda"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "backend 'cuda' is not in this build of ggml (available: cpu" in r.stderr
    r = subprocess.run([sys.executable, "-m", "lanner.cli", "serve", "--backend", "vulkan9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown backend 'vulkan9'" in r.stderr


@pytest.mark.slow
def test_llm_backend_choice(smollm2_file):
    from lanner import LLM

    llm = LLM(smollm2_file, n_ctx=256, n_threads=1, n_parallel=1, backend="cpu")
    try:
        assert llm.backend_name == "cpu" and llm.metadata["backend"] == "cpu"
        assert llm.metadata["device"] == "CPU"
    finally:
        llm.close()
    with pytest.raises(ValueError, match="'metal' is not in this build"):
        LLM(smollm2_file, n_ctx=256, n_threads=1, backend="metal")


@pytest.mark.slow
def test_max_queue_0_serves_when_idle_and_503s_when_busy(tmp_path):
    with lanner_serve(tmp_path, "--parallel", "1", "--max-queue", "0") as (url, _):
        assert _ollama(url, {"num_predict": 4})  # idle: served, not rejected
        long = requests.post(url + "/api/generate", stream=True, timeout=120, json={
            "prompt": "Write a long story about a dragon who learns to fly.",
            "options": {"num_predict": 900}})
        lines = long.iter_lines()
        assert json.loads(next(lines))["done"] is False  # the one slot is generating
        r = requests.post(url + "/api/generate", json={"prompt": "hi", "stream": False}, timeout=60)
        assert r.status_code == 503 and r.headers.get("Retry-After")
        long.close()  # the server cancels it; the slot is free again
        deadline = time.time() + 15
        while requests.get(url + "/api/queue/status").json()["busy"]:
            assert time.time() < deadline
            time.sleep(0.05)
        assert _ollama(url, {"num_predict": 4})


def test_roleless_gemini_turns_alternate_user_model():
    """The spec's role-less multi-turn example: turns without a role alternate user/model from
    the first turn (gemma.cpp's rule), so Gemma's alternating template accepts them."""
    llm = FakeLLM()
    r = make_client(llm).simulate_post(f"/v1beta/models/{FAKE}:generateContent", json={"contents": [
        {"parts": [{"text": "Hi, my name is Alice"}]}, {"parts": [{"text": "Hello Alice!"}]},
        {"parts": [{"text": "What is my name?"}]}]})
    assert r.status_code == 200
    assert [m["role"] for m in llm.calls[-1]["messages"]] == ["user", "assistant", "user"]
