"""Every supported family behind the server: a tiny random model of each loads through the
server's own loader, /api/show and /api/tags report its family, and a chat in each dialect is
answered (the template is the file's own or the family's fallback)."""

from __future__ import annotations

import falcon.testing
import pytest

from lanner.server.app import create_app
from lanner.server.context import load_backend
from lanner.server.settings import Settings
from tiny_gguf import FAMILIES, FAMILY_ARCHS, write_tiny_arch, write_tiny_family

CASES = [(f, "llama" if f in ("llama3", "mistral") else f) for f in FAMILIES] + \
        [(a, a) for a in FAMILY_ARCHS]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("families")
    out = {}
    for name, _ in CASES:
        write = write_tiny_family if name in FAMILIES else write_tiny_arch
        out[name] = write(d / f"{name}.gguf", name)
    return out


@pytest.mark.parametrize("name,arch", CASES, ids=[c[0] for c in CASES])
def test_family_is_served(files, name, arch):
    settings = Settings(model=files[name], ctx_size=128, parallel=1, threads=1, max_tokens=4)
    llm = load_backend(settings)
    try:
        c = falcon.testing.TestClient(create_app(llm, settings), headers={"Host": "localhost"})
        show = c.simulate_post("/api/show", json={"model": name}).json
        assert show["details"]["family"] == arch and show["model_info"]["general.architecture"] == arch
        assert c.simulate_get("/api/tags").json["models"][0]["details"]["family"] == arch
        msgs = [{"role": "user", "content": "Hello"}]
        r = c.simulate_post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert r.json["choices"][0]["finish_reason"] in ("stop", "length")
        r = c.simulate_post("/api/chat", json={"messages": msgs, "stream": False,
                                               "options": {"num_predict": 3}})
        assert r.status_code == 200 and r.json["done"] is True
        r = c.simulate_post(f"/v1beta/models/{name}:generateContent", json={
            "contents": "Hello", "generationConfig": {"maxOutputTokens": 3}})
        assert r.status_code == 200 and r.json["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS")
    finally:
        llm.close()
