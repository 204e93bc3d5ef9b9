"""The web UI in a real browser (Playwright driving the system's Chromium): against `lanner serve`
on SmolLM2 — a streamed reply, settings, stop (Esc) emptying the queue, cached tokens on the
second turn, a text attachment, edit-and-resend, switching / renaming / deleting conversations,
reload keeping them, the narrow layout — and, on in-process apps over the fake backend, the
loading page and model output that tries HTML / script / javascript: links rendering as text.
One browser for the module; screenshots go to a temp dir whose path is printed."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time

import pytest
import requests

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
CHROMIUM = os.environ.get("LANNER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no chromium binary (apt-get install chromium; .ci/run does)", allow_module_level=True)

import lanner.server.context as context  # noqa: E402
from fake_backend import FakeLLM  # noqa: E402
from lanner.server.app import create_app  # noqa: E402
from lanner.server.settings import Settings  # noqa: E402
from server_helpers import free_port, live_server, serve_subprocess, stop_server  # noqa: E402

pytestmark = pytest.mark.slow
TIMEOUT_MS = 90_000  # one reply of SmolLM2 on a shared, busy 2-core machine


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("webui-screenshots")
    print(f"\nweb UI screenshots: {d}")
    yield d
    print(f"\nweb UI screenshots: {d}")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`lanner serve` on the embedded SmolLM2, in a subprocess."""
    tmp = tmp_path_factory.mktemp("webui-serve")
    port = free_port()
    proc, url, statuses, log = serve_subprocess(
        [sys.executable, "-m", "lanner.server.main", "--port", str(port), "--ctx-size", "2048",
         "--parallel", "2", "--threads", "1", "--upload-dir", str(tmp / "uploads")],
        {"LANNER_MODEL": ""}, port, tmp / "serve.log")
    try:
        assert statuses and statuses[-1] == 200, (tmp / "serve.log").read_text()[-3000:]
        yield url
    finally:
        stop_server(proc, log)


@pytest.fixture(scope="module")
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server + "/")
    pg.wait_for_selector("#modelBadge b", timeout=30_000)
    set_settings(pg, max_tokens=32, temperature=0)
    yield pg
    assert not errors, errors
    ctx.close()


def set_settings(pg, max_tokens: int, temperature: float = 0) -> None:
    pg.click("#openSettings")
    pg.fill("#sMax", str(max_tokens))
    pg.fill("#sTemp", str(temperature))
    pg.click("#sSave")
    pg.wait_for_selector("#settings", state="hidden")


def send(pg, text: str) -> None:
    pg.fill("#input", text)
    pg.keyboard.press("Enter")


def wait_reply(pg, n_replies: int) -> str:
    """Wait until the page shows n_replies finished assistant turns; the last one's stats line."""
    pg.locator(".msg.assistant .stats").nth(n_replies - 1).wait_for(timeout=TIMEOUT_MS)
    return pg.locator(".msg.assistant .stats").nth(n_replies - 1).inner_text()


def queue(url: str) -> dict:
    return requests.get(url + "/api/queue/status", timeout=5).json()


# ---- against lanner serve on SmolLM2 ----

# Records, in the page, each text the last assistant reply shows before its stats line (the
# reply's end) appears: a reply of a few tokens streams in tens of milliseconds, too fast to
# poll from the test, while the page paints once per animation frame.
WATCH_PARTIALS = """() => {
  window.__partials = [];
  new MutationObserver(() => {
    const rows = document.querySelectorAll(".msg.assistant");
    const last = rows[rows.length - 1];
    if (!last || last.querySelector(".stats")) return;
    const md = last.querySelector(".md");
    const text = md ? md.innerText : "";
    const seen = window.__partials;
    if (text && text !== seen[seen.length - 1]) seen.push(text);
  }).observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});
}"""


def test_send_streams_then_second_turn_uses_cache(page, server, shots):
    page.evaluate(WATCH_PARTIALS)
    send(page, "Name three colors.")
    assert page.locator(".msg.user .user-text").last.inner_text() == "Name three colors."
    stats1 = wait_reply(page, 1)
    partial = page.evaluate("() => window.__partials")  # text grew before the end: streamed
    assert len(partial) >= 2 and partial[0] != partial[-1], partial
    assert re.search(r"\d+ tokens · [\d.]+ tok/s · TTFT \d+ ms · \d+ cached", stats1), stats1
    page.screenshot(path=str(shots / "first-reply.png"))
    send(page, "And three more?")
    stats2 = wait_reply(page, 2)
    cached = int(re.search(r"(\d+) cached", stats2).group(1))
    first_prompt = int(re.search(r"(\d+) cached", stats1).group(1))
    assert cached > first_prompt and cached > 20, (stats1, stats2)  # the first turn was reused
    assert page.locator("#convTitle").inner_text() == "Name three colors."


def test_stop_mid_reply_empties_the_queue(page, server, shots):
    set_settings(page, max_tokens=600)
    before = requests.get(server + "/metrics", timeout=5).text
    page.click("#newChat")
    send(page, "Write a very long story about a dragon who learns to bake bread.")
    last = page.locator(".msg.assistant").last
    last.locator(".md p").first.wait_for(timeout=TIMEOUT_MS)  # some text has streamed
    assert page.locator("#stop").is_visible()
    page.keyboard.press("Escape")
    stats = last.locator(".stats")
    stats.wait_for(timeout=10_000)
    assert "stopped" in stats.inner_text()
    deadline = time.time() + 10
    while time.time() < deadline and (q := queue(server))["busy"]:
        time.sleep(0.1)
    assert not q["busy"] and q["running"] == 0 and q["pending_requests"] == 0, q
    after = requests.get(server + "/metrics", timeout=5).text
    n = lambda t: float(re.search(r"^lanner_client_disconnects_total (\S+)$", t, re.M).group(1))  # noqa: E731
    assert n(after) == n(before) + 1
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()
    page.screenshot(path=str(shots / "stopped.png"))
    set_settings(page, max_tokens=32)


def test_attach_text_file(page, server, shots):
    page.click("#newChat")
    page.set_input_files("#fileInput", files=[{"name": "cat.png", "mimeType": "image/png",
                                               "buffer": b"\x89PNG\r\n\x1a\n" + bytes(64)}])
    page.wait_for_selector("#error", state="visible")
    assert "takes text only" in page.locator("#error").inner_text()  # SmolLM2 has no vision
    assert page.locator("#attachments .chip").count() == 0
    page.set_input_files("#fileInput", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                               "buffer": b"The secret word is PINEAPPLE.\n"}])
    chip = page.locator("#attachments .chip")
    chip.wait_for()
    assert "notes.txt" in chip.inner_text()
    with page.expect_request("**/api/chat") as req:
        send(page, "What is the secret word in the file?")
    body = req.value.post_data_json
    user = body["messages"][-1]
    assert user["role"] == "user" and "PINEAPPLE" in user["content"] and "notes.txt" in user["content"]
    assert body["sessionId"] and body["newChat"] is True and body["maxTokens"] == 32
    wait_reply(page, 1)
    assert "notes.txt" in page.locator(".msg.user .chip").inner_text()
    assert page.locator("#attachments .chip").count() == 0
    page.screenshot(path=str(shots / "attachment.png"))


def test_edit_and_resend(page, server):
    user = page.locator(".msg.user").first
    user.hover()
    user.locator("button", has_text="Edit").click()
    page.fill(".edit-area", "Say hello in French.")
    with page.expect_request("**/api/chat") as req:
        page.click("button:has-text('Save & send')")
    msgs = req.value.post_data_json["messages"]
    assert msgs[-1]["content"].startswith("Say hello in French.") and len(msgs) == 1
    wait_reply(page, 1)
    assert page.locator(".msg").count() == 2
    assert page.locator(".msg.user .user-text").inner_text() == "Say hello in French."
    # regenerate the last reply: same conversation, one reply again
    page.locator(".msg.assistant").hover()
    with page.expect_request("**/api/chat"):
        page.click("button:has-text('Regenerate')")
    wait_reply(page, 1)
    assert page.locator(".msg").count() == 2


def test_switch_rename_delete_and_reload(page, server, shots):
    n = page.locator(".conv").count()
    assert n >= 3  # from the tests above
    titles = page.locator(".conv .conv-name").all_inner_texts()
    page.locator(".conv .conv-name", has_text="Name three colors.").click()
    assert page.locator("#convTitle").inner_text() == "Name three colors."
    assert page.locator(".msg.user").count() == 2
    conv = page.locator(".conv.active")
    conv.hover()
    conv.locator("button[title=Rename]").click()
    page.fill(".conv-rename", "Colors")
    page.keyboard.press("Enter")
    assert page.locator("#convTitle").inner_text() == "Colors"
    page.reload()
    page.wait_for_selector("#modelBadge b")
    assert page.locator(".conv").count() == n
    assert page.locator("#convTitle").inner_text() == "Colors"
    assert page.locator(".msg.user").count() == 2 and page.locator(".msg.assistant .stats").count() == 2
    page.screenshot(path=str(shots / "after-reload.png"))
    victim = page.locator(".conv").last
    victim_title = victim.locator(".conv-name").inner_text()
    victim.hover()
    victim.locator("button[title=Delete]").click()
    assert page.locator(".conv").count() == n - 1
    assert victim_title not in page.locator(".conv .conv-name").all_inner_texts() or \
        titles.count(victim_title) > 1


def sse_frames(resp):
    """The JSON frames of a web UI SSE response, as they arrive."""
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


def test_a_waiting_request_shows_its_place_in_the_queue(page, server, shots):
    # fill both slots (--parallel 2) with long replies, then ask twice more: both wait
    long = {"messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
            "maxTokens": 1000, "temperature": 0}
    busy = []
    for i in range(2):
        r = requests.post(server + "/api/chat", json={**long, "sessionId": f"bg-{i}"}, stream=True,
                          timeout=60)
        frames = sse_frames(r)
        assert "token" in next(frames)  # it runs
        busy.append((r, frames))  # keep the generator: collecting it would close the response
    raw = requests.post(server + "/api/chat", json={**long, "maxTokens": 4, "sessionId": "q"},
                        stream=True, timeout=60)
    raw_frames = sse_frames(raw)
    assert next(raw_frames) == {"queue": {"position": 1, "pending": 1}}
    page.click("#newChat")
    send(page, "Say hi.")
    note = page.locator(".msg.assistant").last.locator(".queue-note")
    note.wait_for(timeout=10_000)
    assert note.inner_text().startswith("Queued: 2 of 2"), note.inner_text()
    page.screenshot(path=str(shots / "queued.png"))
    for r, _ in busy:  # the clients leave: their requests are aborted and the waiting ones run
        r.close()
    rest = list(raw_frames)
    assert rest[-1]["done"] and rest[-1]["tokenCount"] > 0 and "queue" not in rest[-1]
    wait_reply(page, 1)
    assert page.locator(".queue-note").count() == 0  # gone once it ran


def test_narrow_layout(browser, server, shots):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(server + "/")
    pg.wait_for_selector("#modelBadge b")
    side = pg.locator("#sidebar").bounding_box()
    assert side["x"] + side["width"] <= 1  # off-canvas
    assert pg.locator("#menu").is_visible()
    comp = pg.locator("#composer").bounding_box()
    assert comp["x"] >= 0 and comp["x"] + comp["width"] <= 390
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing overflows sideways
    pg.screenshot(path=str(shots / "narrow.png"))
    pg.click("#menu")
    settle(lambda: pg.locator("#sidebar").bounding_box()["x"] >= 0)
    pg.screenshot(path=str(shots / "narrow-drawer.png"))
    pg.click("#newChat")
    settle(lambda: (lambda b: b["x"] + b["width"] <= 1)(pg.locator("#sidebar").bounding_box()))
    ctx.close()


def settle(cond, timeout: float = 5.0) -> None:
    """Poll cond() until true (the drawer slides in 0.2 s); fail after timeout seconds."""
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.05)


# ---- in-process apps on the fake backend ----

def test_loading_page_until_ready(browser, monkeypatch, shots):
    gate = threading.Event()

    def slow_load(settings):
        gate.wait(30)
        return FakeLLM()

    monkeypatch.setattr(context, "load_backend", slow_load)
    app = create_app(settings=Settings(model="/models/fake-model.Q4_0.gguf"))
    with live_server(app) as url:
        ctx = browser.new_context(viewport={"width": 1100, "height": 700})
        pg = ctx.new_page()
        pg.goto(url + "/")
        pg.wait_for_selector("#loading", state="visible")
        assert "Loading the model" in pg.locator("#loading").inner_text()
        assert requests.get(url + "/health").status_code == 503
        pg.screenshot(path=str(shots / "loading.png"))
        gate.set()
        pg.wait_for_selector("#loading", state="hidden", timeout=20_000)
        pg.wait_for_selector("#modelBadge b")
        assert "fake-model" in pg.locator("#modelBadge").inner_text()
        ctx.close()


HOSTILE = ('Look: <img src=x onerror="window.__xss=1"> then <script>window.__xss=2</script> and '
           '[click me](javascript:window.__xss=3) or <a href="javascript:window.__xss=4">x</a> '
           '[data](data:text/html,<b>x</b>) [fine](https://example.com/ok) **bold** `<b>code</b>`\n\n'
           '```html\n<iframe src="javascript:window.__xss=5"></iframe>\n```')


def test_model_output_html_renders_as_text(browser, shots):
    app = create_app(FakeLLM(reply=HOSTILE), Settings())
    with live_server(app) as url:
        # CSP bypassed on purpose: the renderer alone must keep the page safe
        ctx = browser.new_context(bypass_csp=True)
        pg = ctx.new_page()
        dialogs = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        pg.goto(url + "/")
        pg.wait_for_selector("#modelBadge b")
        send(pg, "hi")
        pg.locator(".msg.assistant .stats").wait_for(timeout=20_000)
        md = pg.locator(".msg.assistant .md")
        text = md.inner_text()
        assert '<img src=x onerror="window.__xss=1">' in text and "<script>window.__xss=2</script>" in text
        assert "[click me](javascript:window.__xss=3)" in text and '<iframe src="javascript:' in text
        for tag in ("img", "script", "iframe", "object", "embed", "b", "svg"):
            assert md.locator(tag).count() == 0, tag
        hrefs = [a.get_attribute("href") for a in md.locator("a").all()]
        assert hrefs == ["https://example.com/ok"], hrefs
        assert md.locator("strong").inner_text() == "bold" and md.locator("code").first.inner_text() == "<b>code</b>"
        pg.locator(".msg.assistant .md").click()
        assert pg.evaluate("window.__xss") is None and not dialogs
        pg.screenshot(path=str(shots / "xss-as-text.png"))
        ctx.close()


RICH = ("<think>Let me think about colors.</think>## Colors\n\n| name | hex |\n|---|---|\n"
        "| red | #f00 |\n\n- one\n- two\n\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
TOOLS = '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]'


def test_thinking_tool_cards_markdown_and_stop_button(browser, shots):
    llm = FakeLLM(reply=RICH)
    app = create_app(llm, Settings())
    with live_server(app) as url:
        ctx = browser.new_context(viewport={"width": 1100, "height": 800})
        pg = ctx.new_page()
        pg.goto(url + "/")
        pg.wait_for_selector("#modelBadge b")
        pg.click("#openSettings")
        pg.fill("#sTools", "{not json")
        pg.click("#sSave")
        assert pg.locator("#settings").is_visible()  # invalid tools keep the dialog open
        pg.fill("#sTools", TOOLS)
        pg.click("#sSave")
        pg.wait_for_selector("#settings", state="hidden")
        pg.check("#thinkQuick")
        with pg.expect_request("**/api/chat") as req:
            send(pg, "colors?")
        body = req.value.post_data_json
        assert body["think"] is True and body["tools"][0]["function"]["name"] == "get_weather"
        wait_reply(pg, 1)
        reply = pg.locator(".msg.assistant").last
        think = reply.locator("details.thinking")
        assert think.get_attribute("open") is None and "Thought process" in think.inner_text()
        think.locator("summary").click()
        assert "Let me think about colors." in think.locator(".thinking-body").inner_text()
        card = reply.locator(".toolcard")
        assert "get_weather" in card.locator(".toolcard-head").inner_text()
        assert '"city": "Paris"' in card.locator(".toolcard-args").inner_text()
        md = reply.locator(".md")
        assert md.locator("h2").inner_text() == "Colors" and md.locator("li").count() == 2
        assert md.locator("td").all_inner_texts() == ["red", "#f00"]
        assert "tool_call" not in md.inner_text() and "<think>" not in md.inner_text()
        pg.screenshot(path=str(shots / "thinking-toolcard.png"))

        llm.engine.loop, llm.engine.delay_s = True, 0.02  # an endless reply, to stop by the button
        pg.uncheck("#thinkQuick")
        send(pg, "go on forever")
        pg.locator(".msg.assistant").nth(1).locator(".md p").first.wait_for(timeout=10_000)
        settle(lambda: "1 running" in pg.locator("#queueBadge").inner_text(), timeout=8)
        pg.click("#stop")
        pg.locator(".msg.assistant").nth(1).locator(".stats").wait_for(timeout=10_000)
        assert "stopped" in pg.locator(".msg.assistant").nth(1).locator(".stats").inner_text()
        settle(lambda: len(llm.engine.aborted) == 1 and not llm.engine.active)
        settle(lambda: "idle" in pg.locator("#queueBadge").inner_text(), timeout=8)
        ctx.close()


def test_api_key_asked_for_and_sent(browser):
    app = create_app(FakeLLM(), Settings(api_key="sesame"))
    with live_server(app) as url:
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.goto(url + "/")
        pg.wait_for_selector("#settings", state="visible")  # the page asks for the key
        assert "API key" in pg.locator("#error").inner_text()
        pg.fill("#sKey", "sesame")
        pg.click("#sSave")
        pg.wait_for_selector("#modelBadge b")
        with pg.expect_request("**/api/chat") as req:
            send(pg, "hi")
        assert req.value.headers["authorization"] == "Bearer sesame"
        pg.locator(".msg.assistant .stats").wait_for(timeout=20_000)
        ctx.close()
