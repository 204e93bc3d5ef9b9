"""Which vision projector `lanner serve` loads: --mmproj, an mmproj*.gguf beside the model
(auto-detected), or none with --no-mmproj; and the server process end to end with one."""

from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

import tiny_mmproj as tm
import tiny_vlm
from lanner.server.settings import Settings
from serve_process import lanner_serve


def _touch(p):
    p.write_bytes(b"")
    return str(p)


def test_mmproj_choice(tmp_path):
    model = tmp_path / "gemma-3-4b-it.gguf"
    _touch(model)
    assert Settings().mmproj_path(str(model)) is None  # nothing beside it
    one = _touch(tmp_path / "mmproj-model-f16.gguf")
    assert Settings().mmproj_path(str(model)) == one
    assert Settings(no_mmproj=True).mmproj_path(str(model)) is None
    assert Settings(mmproj="/x/given.gguf").mmproj_path(str(model)) == "/x/given.gguf"
    # several: the one named after the model, else none (ambiguous)
    mine = _touch(tmp_path / "mmproj-gemma-3-4b-it-f16.gguf")
    assert Settings().mmproj_path(str(model)) == mine
    _touch(tmp_path / "mmproj-gemma-3-4b-it-q8.gguf")
    assert Settings().mmproj_path(str(model)) is None


def test_image_limits_from_settings():
    lim = Settings(max_images=3, max_image_bytes=1000, max_image_pixels=500).image_limits()
    assert (lim.max_images, lim.max_bytes, lim.max_pixels) == (3, 1000, 500)
    with pytest.raises(ValueError, match="max_images"):
        Settings(max_images=0).check()


def test_serve_auto_detects_the_projector(tmp_path):
    model = tiny_vlm.write_tiny_gemma3(tmp_path / "tiny-gemma3.gguf")
    tm.write_tiny_mmproj(tmp_path / "mmproj-tiny-gemma3.gguf", "gemma3", n_embd_out=tiny_vlm.N_EMBD)
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (9, 99, 199)).save(buf, "PNG")
    img = base64.b64encode(buf.getvalue()).decode()
    with lanner_serve(tmp_path, "--model", model) as (url, _log):
        show = requests.post(url + "/api/show", json={"model": "tiny-gemma3"}).json()
        assert "vision" in show["capabilities"]
        r = requests.post(url + "/api/chat", json={"model": "tiny-gemma3", "stream": False,
                                                   "options": {"num_predict": 2},
                                                   "messages": [{"role": "user", "content": "hi", "images": [img]}]})
        assert r.status_code == 200 and r.json()["prompt_eval_count"] > tm.n_image_tokens("gemma3")
    with lanner_serve(tmp_path, "--model", model, "--no-mmproj") as (url, _log):
        show = requests.post(url + "/api/show", json={"model": "tiny-gemma3"}).json()
        assert "vision" not in show["capabilities"]
