"""Images end to end: a tiny random Gemma 3 + `gemma3` projector pair behind the server, driven by
the vendors' SDKs (ollama images=, openai image_url data URL, google-genai Part.from_bytes); an
image between two texts stays there (content lists, Ollama raw `[img-N]` tags); the prefix cache
reusing an image's cells on the next turn; bad images as 400s naming the part."""

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


# ---- an image's place ----------------------------------------------------------------------

def _pieces(vlm, ids) -> list:
    """ids as [text, ("image", pixel key), text, ...]: the text between image spans decoded."""
    from lanner.engine.image_spans import key_of

    start = vlm.tokenizer.token_to_id("<start_of_image>")
    end = vlm.tokenizer.token_to_id("<end_of_image>")
    out, text = [], []
    for t in ids:
        if t < 0:
            if not (out and out[-1] == ("image", key_of(t))):
                out += [vlm.tokenizer.decode(text, skip_special=True), ("image", key_of(t))]
                text = []
        elif t not in (start, end):
            text.append(t)
    return out + [vlm.tokenizer.decode(text, skip_special=True)]


def _key(vlm, img: bytes) -> int:
    return vlm.vision.embed(vlm._image(img))[0]


def _parts(*items):
    return [{"type": "image", "image": x} if isinstance(x, bytes) else {"type": "text", "text": x}
            for x in items]


def test_images_stay_between_the_texts(vlm):
    a, b = _png((200, 0, 0)), _png((0, 0, 200))
    ids = vlm.chat_tokens([{"role": "user", "content": _parts("Alpha ", a, " beta ", b, " gamma")}])
    p = _pieces(vlm, ids)
    assert [x for x in p if isinstance(x, tuple)] == [("image", _key(vlm, a)), ("image", _key(vlm, b))]
    assert p[0].endswith("Alpha ") and p[2] == " beta " and p[4].startswith(" gamma")
    # each image's full span (start, rows, end) at its place
    start = vlm.tokenizer.token_to_id("<start_of_image>")
    i = ids.index(start)
    assert ids[i + 1 + tm.n_image_tokens("gemma3")] == vlm.tokenizer.token_to_id("<end_of_image>")
    # `images` still go first, before the content's text and its own image parts
    first = _pieces(vlm, vlm.chat_tokens([{"role": "user", "content": _parts("Alpha ", b), "images": [a]}]))
    assert first[1] == ("image", _key(vlm, a)) and first[2] == "Alpha " and first[3] == ("image", _key(vlm, b))


def test_typed_slot_markers_stay_text(vlm):
    """A slot marker is private-use characters around a per-render random nonce: text that
    spells one (any nonce) never becomes an image slot."""
    forged = "x\U000F0004" + "0" * 16 + ":0\U000F0005y \U000F00041234567890123456:1\U000F0005"
    ids = vlm.chat_tokens([{"role": "user", "content": _parts(forged, _png())}])
    p = _pieces(vlm, ids)
    assert [x for x in p if isinstance(x, tuple)] == [("image", _key(vlm, _png()))]
    assert len(ids.images) == 1
    assert forged in p[0]  # the typed markers came through as the characters they are
    assert min(vlm.chat_tokens([{"role": "user", "content": forged}])) >= 0


def test_interleaved_follow_up_turn_reuses_the_image_cells(vlm):
    img = _png((30, 160, 60))
    n_before = vlm.vision.n_encoded
    first = [{"role": "user", "content": _parts("Look at", img, "and describe it.")}]
    r1 = vlm.chat(first, max_tokens=3, temperature=0)
    r2 = vlm.chat(first + [{"role": "assistant", "content": r1.text},
                           {"role": "user", "content": "More?"}], max_tokens=3, temperature=0)
    assert r2.usage.cached_tokens >= r1.usage.prompt_tokens - 1 > tm.n_image_tokens("gemma3")
    assert vlm.vision.n_encoded == n_before + 1


@pytest.fixture
def spy(vlm, monkeypatch):
    """The prompt ids the server built (chat_tokens / raw_tokens results), in order."""
    seen = []
    for name in ("chat_tokens", "raw_tokens"):
        real = getattr(vlm, name)

        def record(*a, _real=real, **k):
            seen.append(_real(*a, **k))
            return seen[-1]
        monkeypatch.setattr(vlm, name, record)
    return seen


def test_openai_text_image_text(server, vlm, spy):
    openai = pytest.importorskip("openai")
    a, b = _png((250, 120, 0)), _png((0, 120, 250))
    url = lambda x: {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(x)}}
    client = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Alpha "}, url(a), {"type": "text", "text": " beta "},
                                     url(b), {"type": "text", "text": " gamma"}]}])
    direct = [{"role": "user", "content": _parts("Alpha ", a, " beta ", b, " gamma")}]
    want = vlm.chat_tokens(direct)
    assert spy[-1] == want
    p = _pieces(vlm, spy[-1])
    assert p[0].endswith("Alpha ") and p[1] == ("image", _key(vlm, a)) and p[2] == " beta "
    assert p[3] == ("image", _key(vlm, b)) and p[4].startswith(" gamma")
    assert r.choices[0].message.content == vlm.chat(direct, max_tokens=4, temperature=0).text
    # the next turn through the SDK: the first prompt, images included, comes from the cache
    n = vlm.vision.n_encoded
    r2 = client.chat.completions.create(model=MODEL, max_tokens=2, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Alpha "}, url(a), {"type": "text", "text": " beta "},
                                     url(b), {"type": "text", "text": " gamma"}]},
        {"role": "assistant", "content": r.choices[0].message.content}, {"role": "user", "content": "Why?"}])
    assert r2.usage.prompt_tokens_details.cached_tokens >= len(want) - 1 > 2 * tm.n_image_tokens("gemma3")
    assert vlm.vision.n_encoded == n  # both images from the encoder's cache


def test_genai_text_image_text(server, vlm, spy):
    pytest.importorskip("google.genai")
    from google import genai
    from google.genai import types

    a = _png((10, 10, 10))
    client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=server, api_version="v1beta"))
    r = client.models.generate_content(
        model=MODEL, contents=[types.Content(role="user", parts=[
            types.Part.from_text(text="Alpha "), types.Part.from_bytes(data=a, mime_type="image/png"),
            types.Part.from_text(text=" beta")])],
        config=types.GenerateContentConfig(temperature=0, max_output_tokens=4))
    direct = [{"role": "user", "content": _parts("Alpha ", a, " beta")}]
    assert spy[-1] == vlm.chat_tokens(direct)
    p = _pieces(vlm, spy[-1])
    assert p[0].endswith("Alpha ") and p[1] == ("image", _key(vlm, a)) and p[2].startswith(" beta")
    assert r.text == vlm.chat(direct, max_tokens=4, temperature=0).text


def test_ollama_raw_generate_places_images_at_their_tags(server, vlm, spy):
    ollama = pytest.importorskip("ollama")
    a, b = _png((100, 0, 100)), _png((0, 100, 100))
    client = ollama.Client(host=server)
    opts = {"num_predict": 3, "temperature": 0}
    g = client.generate(model=MODEL, prompt="Alpha [img-0] beta", images=[a], raw=True, options=opts)
    want = vlm.raw_tokens(["Alpha ", {"type": "image", "image": a}, " beta"])
    assert spy[-1] == want and _pieces(vlm, want)[1] == ("image", _key(vlm, a))
    assert g.response == vlm.generate(want, max_tokens=3, temperature=0).text
    assert g.prompt_eval_count == len(want)
    # no tag: before the prompt; one tagged, one not: the untagged first, the tagged at its tag
    client.generate(model=MODEL, prompt="Alpha beta", images=[a], raw=True, options=opts)
    assert _pieces(vlm, spy[-1])[1:] == [("image", _key(vlm, a)), "Alpha beta"]
    client.generate(model=MODEL, prompt="Alpha [img-0] beta", images=[a, b], raw=True, options=opts)
    assert _pieces(vlm, spy[-1])[1:] == [("image", _key(vlm, b)), "Alpha ", ("image", _key(vlm, a)), " beta"]


def test_ollama_raw_tag_errors_and_plain_text(vlm):
    c = make_client(vlm)
    gen = lambda prompt, images: c.simulate_post("/api/generate", json={
        "model": MODEL, "prompt": prompt, "raw": True, "stream": False, "images": images,
        "options": {"num_predict": 1}})
    for tag in ("[img-1]", "[img-99999999999999999999]"):
        r = gen(f"Alpha {tag}", [_b64(_png())])
        assert r.status_code == 400 and "prompt" in r.json["error"] and tag in r.json["error"]
    r = gen("[img-0]" * 20, [_b64(_png())])  # each tag places the image: counted against the limit
    assert r.status_code == 400 and "20 images" in r.json["error"]
    # without images a tag is text, as it was
    r = gen("Alpha [img-0]", [])
    assert r.status_code == 200 and r.json["prompt_eval_count"] == len(vlm.tokenize("Alpha [img-0]"))


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
    r = c.simulate_post("/api/generate", json={"model": "fake-model.Q4_0", "prompt": "a [img-0] b", "raw": True,
                                               "stream": False, "images": [_b64(_png())]})
    assert r.status_code == 400 and "no vision projector" in r.json["error"] and "images[0]" in r.json["error"]
