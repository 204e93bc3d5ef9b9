"""Images end to end: a tiny random Gemma 3 + `gemma3` projector pair behind the server, driven by
the vendors' SDKs (ollama images=, openai image_url data URL, google-genai Part.from_bytes); the
prefix cache reusing an image's cells on the next turn; bad images as 400s naming the part."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import lanner
import tiny_mmproj as tm
import tiny_vlm
from fake_backend import FakeLLM
from server_helpers import live_server, make_app, make_client

MODEL = "tiny-gemma3"


def _png(color=(200, 30, 30), size=(48, 40)) -> bytes:
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 6):  # some structure
        for y in range(size[1]):
            img.putpixel((x, y), (20, 20, 220))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    d = tmp_path_factory.mktemp("vlm")
    text = tiny_vlm.write_tiny_gemma3(d / f"{MODEL}.gguf")
    proj = tm.write_tiny_mmproj(d / f"mmproj-{MODEL}.gguf", "gemma3", n_embd_out=tiny_vlm.N_EMBD)
    llm = lanner.LLM(text, mmproj=proj, n_ctx=1024, n_threads=2, n_parallel=2)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def server(vlm):
    with live_server(make_app(vlm)) as url:
        yield url


def _direct(vlm, image: bytes, text="What is in this image?", n=6):
    r = vlm.chat([{"role": "user", "content": text, "images": [image]}], max_tokens=n, temperature=0)
    return r


def test_prompt_holds_the_image_span(vlm):
    ids = vlm.chat_tokens([{"role": "user", "content": "Look:", "images": [_png()]}])
    start = vlm.tokenizer.token_to_id("<start_of_image>")
    end = vlm.tokenizer.token_to_id("<end_of_image>")
    i = ids.index(start)
    assert ids[i + 1 + tm.n_image_tokens("gemma3")] == end
    assert all(t < 0 for t in ids[i + 1:i + 1 + tm.n_image_tokens("gemma3")])
    assert len(ids.images) == 1
    # equal pixels, equal ids; other pixels, other ids
    assert vlm.chat_tokens([{"role": "user", "content": "Look:", "images": [_png()]}]) == ids
    other = vlm.chat_tokens([{"role": "user", "content": "Look:", "images": [_png((0, 255, 0))]}])
    assert other[i + 1] != ids[i + 1]


def test_follow_up_turn_reuses_the_image_cells(vlm):
    img = _png((10, 120, 240))
    n_before = vlm.vision.n_encoded
    first = [{"role": "user", "content": "Describe the picture.", "images": [img]}]
    r1 = vlm.chat(first, max_tokens=4, temperature=0)
    turn2 = first + [{"role": "assistant", "content": r1.text}, {"role": "user", "content": "And its colour?"}]
    r2 = vlm.chat(turn2, max_tokens=4, temperature=0)
    # the whole first prompt (text before, the 16 image rows, text after) came from the cache
    assert r2.usage.cached_tokens >= r1.usage.prompt_tokens - 1 > tm.n_image_tokens("gemma3")
    assert vlm.vision.n_encoded == n_before + 1  # encoded once; the second turn hit the LRU
    # another image in the same place: the cache stops before the image
    other = [{"role": "user", "content": "Describe the picture.", "images": [_png((250, 250, 0))]}]
    r3 = vlm.chat(other, max_tokens=1, temperature=0)
    start = vlm.chat_tokens(other).index(vlm.tokenizer.token_to_id("<start_of_image>"))
    assert r3.usage.cached_tokens == start + 1


# ---- the SDKs ------------------------------------------------------------------------------

def test_ollama_chat_and_generate_with_images(server, vlm):
    ollama = pytest.importorskip("ollama")
    img = _png()
    want = _direct(vlm, img)
    client = ollama.Client(host=server)
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "What is in this image?",
                                            "images": [img]}], options={"num_predict": 6, "temperature": 0})
    assert r.message.content == want.text
    assert r.prompt_eval_count == want.usage.prompt_tokens
    g = client.generate(model=MODEL, prompt="What is in this image?", images=[img],
                        options={"num_predict": 6, "temperature": 0})
    assert g.response == want.text
    shown = client.show(MODEL)
    assert "vision" in shown.capabilities


def test_openai_image_url_data_url(server, vlm):
    openai = pytest.importorskip("openai")
    img = _png((90, 200, 90))
    want = _direct(vlm, img)
    client = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0)
    url = "data:image/png;base64," + base64.b64encode(img).decode()
    r = client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "What is in this image?"}]}])
    assert r.choices[0].message.content == want.text
    assert r.usage.prompt_tokens == want.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    assert "data: URL" in str(ei.value) and ei.value.body["param"] == "messages[0].content[0]"


def test_genai_part_from_bytes(server, vlm):
    pytest.importorskip("google.genai")
    from google import genai
    from google.genai import types

    img = _png((240, 240, 240))
    want = _direct(vlm, img)
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=server, api_version="v1beta"))
    r = client.models.generate_content(
        model=MODEL, contents=[types.Part.from_bytes(data=img, mime_type="image/png"), "What is in this image?"],
        config=types.GenerateContentConfig(temperature=0, max_output_tokens=6))
    assert r.text == want.text
    assert r.usage_metadata.prompt_token_count == want.usage.prompt_tokens


def test_models_endpoint_reports_vision(vlm):
    c = make_client(vlm)
    m = c.simulate_get("/api/models").json
    assert m["vision"] is True and m["loadedMmProj"] == f"mmproj-{MODEL}.gguf"
    assert "vision" in c.simulate_post("/api/show", json={"model": MODEL}).json["capabilities"]


# ---- bad input -----------------------------------------------------------------------------

def _huge_png_header(w=20000, h=20000) -> bytes:
    """A PNG that declares w x h pixels (its data is a stub: the limit must act before decoding)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_truncated() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[:300]


def _ollama_chat(c, images, model=MODEL):
    return c.simulate_post("/api/chat", json={"model": model, "stream": False, "options": {"num_predict": 1},
                                              "messages": [{"role": "user", "content": "hi", "images": images}]})


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_one_pixel_png_is_fine(vlm):
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (1, 2, 3)).save(buf, "PNG")
    r = _ollama_chat(make_client(vlm), [_b64(buf.getvalue())])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("data, message", [
    (_huge_png_header(), "pixels"),
    (_jpeg_truncated(), "truncated or corrupt"),
    (b"this is text, not a png", "not an image"),
])
def test_bad_images_are_400_naming_the_part(vlm, data, message):
    c = make_client(vlm)
    r = _ollama_chat(c, [_b64(_png()), _b64(data)])
    assert r.status_code == 400 and message in r.json["error"] and "messages[0].images[1]" in r.json["error"]
    # the same through Gemini with an image MIME type, and OpenAI as a data URL
    r = c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": [{"parts": [
        {"text": "hi"}, {"inline_data": {"mime_type": "image/png", "data": _b64(data)}}]}]})
    assert r.status_code == 400 and message in r.text and "contents[0].parts[1]" in r.text
    r = c.simulate_post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 1, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(data)}}]}]})
    assert r.status_code == 400 and r.json["error"]["param"] == "messages[0].content[0]"
    # and the server still answers
    assert _ollama_chat(c, [_b64(_png())]).status_code == 200


def test_too_many_images_and_bad_parts(vlm):
    c = make_client(vlm)
    r = _ollama_chat(c, [_b64(_png())] * 100)
    assert r.status_code == 400 and "100 images" in r.json["error"]
    r = _ollama_chat(c, ["not base64!"])
    assert r.status_code == 400 and "base64" in r.json["error"]
    r = c.simulate_post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": [{"parts": [
        {"inlineData": {"mimeType": "text/plain", "data": _b64(b"hello")}}]}]})
    assert r.status_code == 400 and "unsupported image type" in r.text


def test_images_to_a_text_model_are_400():
    c = make_client(FakeLLM())
    r = _ollama_chat(c, [_b64(_png())], model="fake-model.Q4_0")
    assert r.status_code == 400 and "no vision projector" in r.json["error"]
    r = c.simulate_post("/v1/chat/completions", json={"model": "fake-model.Q4_0", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(_png())}}]}]})
    assert r.status_code == 400 and "no vision projector" in r.text
