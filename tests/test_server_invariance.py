"""Through the HTTP server on the real SmolLM2: a temperature-0 request sent twice gives the same
text and logprobs, exactly: once cold (its >64-token prompt prefilled in one step), once with its
prompt cached and another request submitted just before it. Uses the server test helpers only."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

try:
    from lanner import LLM
    import lanner._core  # noqa: F401
    from lanner.default_model import smollm2_path
except Exception as e:  # noqa: BLE001 - any missing piece means: not built here
    pytest.skip(f"real backend unavailable: {type(e).__name__}: {e}", allow_module_level=True)

from server_helpers import live_server, make_app  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = Path(str(smollm2_path())).stem


def _ask(url, content, max_tokens, stream=False):
    body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "logprobs": True, "top_logprobs": 2,
            "messages": [{"role": "user", "content": content}], "stream": stream}
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return r


def test_temperature_zero_request_twice_same_text_and_logprobs():
    llm = LLM(str(smollm2_path()), n_ctx=1024, n_threads=1, n_parallel=2)
    try:
        with live_server(make_app(llm)) as url:
            question = ("I am planning a slow trip along the great rivers of Europe next summer, by train "
                        "and by boat, with two children who love castles, bridges and old harbours. "
                        "Name three rivers I should follow and say one thing about each.")
            first = _ask(url, question, 12).json()
            neighbour = threading.Thread(target=_ask, args=(url, "Count from one to twenty in words.", 40, True))
            neighbour.start()
            second = _ask(url, question, 12).json()
            neighbour.join()
        a, b = first["choices"][0], second["choices"][0]
        assert a["message"]["content"] and a["message"]["content"] == b["message"]["content"]
        assert a["logprobs"]["content"] == b["logprobs"]["content"]  # tokens, logprobs, top-2, exactly
        assert len(a["logprobs"]["content"]) == first["usage"]["completion_tokens"]
        assert first["usage"]["prompt_tokens"] > 64
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    finally:
        llm.close()
