// lanner web UI: conversations kept in localStorage, replies streamed from POST /api/chat (SSE).
// Contract: talks only to this server (/health, /api/models, /api/queue/status, /api/chat,
// /api/upload); model text reaches the page only through LannerMarkdown (DOM nodes +
// textContent) or textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = { convs: "lanner.convs.v1", current: "lanner.current.v1", settings: "lanner.settings.v1",
  key: "lanner.apikey.v1" };
const DEFAULTS = { system: "", temperature: 0.7, topP: 0.95, topK: 40, maxTokens: 512, think: false, tools: "" };

const state = {
  convs: load(STORE.convs, []),
  currentId: load(STORE.current, null),
  settings: { ...DEFAULTS, ...load(STORE.settings, {}) },
  model: null,          // /api/models
  pending: [],          // attachments of the message being written
  busy: null,           // { controller, conv, msg } while a reply streams
};

function load(key, fallback) {
  try { const v = JSON.parse(localStorage.getItem(key)); return v ?? fallback; } catch { return fallback; }
}
function save() {
  try {
    localStorage.setItem(STORE.convs, JSON.stringify(state.convs));
    localStorage.setItem(STORE.current, JSON.stringify(state.currentId));
  } catch (e) {
    toast("Could not save the conversations in this browser (" + e.name + "): delete some old ones.");
  }
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function uid() {
  return (crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2));
}
// fetch with the API key (a server started with --api-key wants it on every /api route)
async function api(path, opts = {}) {
  const key = localStorage.getItem(STORE.key);
  if (key) opts.headers = { ...(opts.headers || {}), Authorization: "Bearer " + key };
  const r = await fetch(path, opts);
  if (r.status === 401 && !api.asked) {
    api.asked = true;
    toast("This server needs an API key: enter it in Settings.");
    openSettings();
  }
  return r;
}

function current() { return state.convs.find((c) => c.id === state.currentId) || null; }

// ---------------------------------------------------------------- loading page + badges

async function waitReady() {
  let shown = false;
  for (;;) {
    try {
      const r = await fetch("/health", { cache: "no-store" });
      const body = await r.json().catch(() => ({}));
      if (r.ok) break;
      $("loadingDetail").textContent = body.status === "error"
        ? "The model failed to load: " + (body.error || "unknown error")
        : "The server is loading the model. This page opens the chat when it is ready.";
    } catch {
      $("loadingDetail").textContent = "Waiting for the server…";
    }
    if (!shown) { $("loading").hidden = false; shown = true; }
    await new Promise((res) => setTimeout(res, 500));
  }
  $("loading").hidden = true;
}

async function loadModel() {
  try {
    const r = await api("/api/models");
    if (!r.ok) throw new Error("HTTP " + r.status);
    const m = await r.json();
    state.model = m;
    const badge = $("modelBadge");
    badge.textContent = "";
    badge.appendChild(el("b", "", m.modelName || m.model));
    const facts = [m.family, fmtCtx(m.contextSize) + " ctx", m.vision ? "vision" : "text only"];
    badge.appendChild(el("span", "muted", " · " + facts.join(" · ")));
    badge.title = `${m.file} — ${m.architecture}, context ${m.contextSize} tokens, backend ${m.backend}` +
      `, vision ${m.vision ? "yes" : "no"}`;
  } catch {
    $("modelBadge").textContent = "model unavailable";
  }
}
function fmtCtx(n) { return n >= 1024 ? Math.round(n / 1024) + "k" : String(n || "?"); }

async function pollQueue() {
  try {
    const r = await api("/api/queue/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const q = await r.json();
    const b = $("queueBadge");
    b.classList.toggle("busy", !!q.busy);
    b.textContent = q.busy ? `● ${q.running} running · ${q.pending_requests} queued` : "● idle";
    b.title = `${q.total_processed} requests served · ${q.kv_cells_used}/${q.n_ctx} KV cells used`;
  } catch {
    $("queueBadge").textContent = "● offline";
  }
  setTimeout(pollQueue, state.busy ? 700 : 2000);
}

// ---------------------------------------------------------------- sidebar

function newConversation() {
  const c = { id: uid(), title: "New chat", created: Date.now(), updated: Date.now(), messages: [] };
  state.convs.unshift(c);
  state.currentId = c.id;
  save();
  render();
  $("input").focus();
}

function renderSidebar() {
  const list = $("convList");
  list.textContent = "";
  const sorted = [...state.convs].sort((a, b) => b.updated - a.updated);
  if (!sorted.length) list.appendChild(el("p", "conv-empty", "No conversations yet. They are kept in this browser."));
  for (const c of sorted) {
    const item = el("div", "conv" + (c.id === state.currentId ? " active" : ""));
    item.dataset.id = c.id;
    const title = el("button", "conv-name", c.title || "New chat");
    title.type = "button";
    title.addEventListener("click", () => switchTo(c.id));
    const rename = el("button", "conv-act", "✎");
    rename.type = "button";
    rename.title = "Rename";
    rename.setAttribute("aria-label", "Rename");
    rename.addEventListener("click", () => startRename(item, c));
    const del = el("button", "conv-act", "✕");
    del.type = "button";
    del.title = "Delete";
    del.setAttribute("aria-label", "Delete");
    del.addEventListener("click", () => deleteConversation(c.id));
    item.append(title, rename, del);
    list.appendChild(item);
  }
}

function startRename(item, c) {
  const input = el("input", "conv-rename");
  input.value = c.title;
  item.replaceChildren(input);
  input.focus();
  input.select();
  const commit = (keep) => {
    if (keep && input.value.trim()) { c.title = input.value.trim().slice(0, 80); save(); }
    render();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") commit(true);
    if (e.key === "Escape") { e.stopPropagation(); commit(false); }
  });
  input.addEventListener("blur", () => commit(true));
}

function deleteConversation(id) {
  if (state.busy && state.busy.conv.id === id) stop();
  state.convs = state.convs.filter((c) => c.id !== id);
  if (state.currentId === id) state.currentId = state.convs[0]?.id ?? null;
  save();
  render();
}

function switchTo(id) {
  state.currentId = id;
  save();
  closeDrawer();
  render();
}

// ---------------------------------------------------------------- conversation view

function render() {
  renderSidebar();
  const c = current();
  $("convTitle").textContent = c ? c.title : "New chat";
  const box = $("messages");
  box.replaceChildren();
  if (!c || !c.messages.length) {
    const empty = el("div", "empty");
    empty.append(el("h1", "", "What can I help with?"),
      el("p", "", "Replies stream from the model on this server. Enter sends, Shift+Enter adds a line, Esc stops."));
    box.appendChild(empty);
    return;
  }
  c.messages.forEach((m, i) => box.appendChild(renderMessage(c, m, i)));
  box.scrollTop = box.scrollHeight;
}

function renderMessage(c, m, i) {
  const row = el("article", "msg " + m.role);
  row.dataset.index = i;
  const bubble = el("div", "bubble");
  row.appendChild(bubble);
  if (m.role === "user") {
    if (m.attachments?.length) bubble.appendChild(renderChips(m.attachments, false));
    bubble.appendChild(el("div", "user-text", m.content));
    const acts = el("div", "actions");
    acts.appendChild(action("Edit", () => editTurn(c, i, row)));
    row.appendChild(acts);
  } else {
    fillAssistant(bubble, m);
    const meta = el("div", "meta");
    if (m.stats || m.aborted) meta.appendChild(renderStats(m));
    const acts = el("div", "actions");
    acts.appendChild(action("Copy", () => navigator.clipboard?.writeText(m.content)));
    if (i === c.messages.length - 1) acts.appendChild(action("Regenerate", () => regenerate(c)));
    meta.appendChild(acts);
    row.appendChild(meta);
  }
  return row;
}

function action(label, fn) {
  const b = el("button", "act", label);
  b.type = "button";
  b.addEventListener("click", fn);
  return b;
}

function fillAssistant(bubble, m) {
  bubble.replaceChildren();
  if (m.thinking) {
    const d = el("details", "thinking");
    d.open = !!m.streamingThinking;
    d.appendChild(el("summary", "", m.streamingThinking ? "Thinking…" : "Thought process"));
    d.appendChild(el("div", "thinking-body", m.thinking));
    bubble.appendChild(d);
  }
  const body = el("div", "md");
  body.appendChild(LannerMarkdown.renderMarkdown(m.content));
  bubble.appendChild(body);
  for (const tc of m.toolCalls || []) {
    const card = el("div", "toolcard");
    const head = el("div", "toolcard-head");
    head.append(el("span", "toolcard-tag", "tool call"), el("span", "", tc.name));
    card.appendChild(head);
    card.appendChild(el("pre", "toolcard-args", JSON.stringify(tc.arguments, null, 2)));
    bubble.appendChild(card);
  }
  if (m.error) bubble.appendChild(el("div", "msg-error", "Error: " + m.error));
  if (!m.content && !m.thinking && !m.error && m.pending && m.queue) {
    bubble.appendChild(el("div", "queue-note",
      `Queued: ${m.queue.position} of ${m.queue.pending} waiting for a free slot…`));
  }
  if (!m.content && !m.thinking && !m.error && m.pending) {
    const dots = el("div", "typing");
    dots.append(el("span"), el("span"), el("span"));
    bubble.appendChild(dots);
  }
}

function renderStats(m) {
  const s = m.stats || {};
  const parts = [];
  if (m.stats) {
    parts.push(`${s.tokenCount} tokens`);
    parts.push(`${s.tokPerSec.toFixed(1)} tok/s`);
    parts.push(`TTFT ${Math.round(s.ttft * 1000)} ms`);
    parts.push(`${s.cachedTokens} cached`);
    if (s.finishReason === "length") parts.push("max tokens reached");
  }
  if (m.aborted) parts.push("stopped");
  const line = el("div", "stats", parts.join(" · "));
  if (m.stats) line.title = `prompt ${s.promptTokens} tokens (${s.cachedTokens} from cache, ` +
    `${s.kvReusePercent.toFixed(0)}%), ${s.elapsed.toFixed(2)} s total, finish: ${s.finishReason}`;
  return line;
}

function renderChips(list, removable) {
  const row = el("div", "chips");
  list.forEach((a, k) => {
    const chip = el("span", "chip " + a.kind);
    chip.append(el("span", "chip-tag", a.kind === "image" ? "IMG" : "TXT"), el("span", "", a.name));
    if (a.truncated) chip.appendChild(el("span", "muted", " (truncated)"));
    if (removable) {
      const x = el("button", "chip-x", "×");
      x.type = "button";
      x.setAttribute("aria-label", "Remove " + a.name);
      x.addEventListener("click", () => { state.pending.splice(k, 1); renderPending(); });
      chip.appendChild(x);
    }
    row.appendChild(chip);
  });
  return row;
}

function renderPending() {
  $("attachments").replaceChildren(state.pending.length ? renderChips(state.pending, true) : "");
}

// ---------------------------------------------------------------- sending + streaming

function apiMessages(c) {
  const out = [];
  if (state.settings.system.trim()) out.push({ role: "system", content: state.settings.system });
  for (const m of c.messages) {
    if (m.role === "user") {
      let content = m.content;
      const images = [];
      for (const a of m.attachments || []) {
        if (a.kind === "text") content += `\n\n[Attached file: ${a.name}]\n\`\`\`\n${a.text}\n\`\`\``;
        else images.push(a.id);
      }
      const msg = { role: "user", content };
      if (images.length) msg.images = images;
      out.push(msg);
    } else if (!m.error || m.content) {
      out.push({ role: "assistant", content: m.content });
    }
  }
  return out;
}

function send(text) {
  if (state.busy) return;
  text = text.trim();
  if (!text && !state.pending.length) return;
  let c = current();
  if (!c) { newConversation(); c = current(); }
  c.messages.push({ role: "user", content: text, attachments: state.pending.splice(0) });
  if (c.title === "New chat") c.title = (text || c.messages.at(-1).attachments[0]?.name || "Chat").slice(0, 48);
  $("input").value = "";
  autosize();
  renderPending();
  ask(c);
}

async function ask(c) {
  const s = state.settings;
  const msg = { role: "assistant", content: "", thinking: "", toolCalls: [], pending: true };
  const body = {
    messages: apiMessages(c), sessionId: c.id, newChat: c.messages.length === 1,
    maxTokens: s.maxTokens, temperature: s.temperature, topP: s.topP, topK: s.topK,
    think: !!s.think,
  };
  try { if (s.tools.trim()) body.tools = JSON.parse(s.tools); } catch { /* checked when saved */ }
  c.messages.push(msg);
  c.updated = Date.now();
  save();
  render();
  const row = $("messages").lastElementChild;
  const controller = new AbortController();
  state.busy = { controller, conv: c, msg };
  setBusy(true);
  try {
    const r = await api("/api/chat", {
      method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error(err.error || `HTTP ${r.status}`);
    }
    await readFrames(r.body, (f) => onFrame(msg, f, row));
  } catch (e) {
    if (e.name === "AbortError") msg.aborted = true;
    else msg.error = msg.error || e.message;
  } finally {
    msg.pending = false;
    msg.streamingThinking = false;
    state.busy = null;
    setBusy(false);
    save();
    if (current() === c) render();
  }
}

async function readFrames(stream, onFrame) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) onFrame(JSON.parse(data));
    }
  }
}

let paintQueued = false;
function onFrame(msg, f, row) {
  if (f.queue) msg.queue = f.queue;
  else msg.queue = null;  // any other frame: it runs (or ended)
  if (f.token !== undefined) { msg.content += f.token; msg.streamingThinking = false; }
  if (f.thinking !== undefined) { msg.thinking += f.thinking; msg.streamingThinking = true; }
  if (f.tool_calls) msg.toolCalls.push(...f.tool_calls);
  if (f.error !== undefined && !f.done) msg.error = f.error;
  if (f.done) {
    if (f.error) msg.error = f.error;
    if (f.tokenCount !== undefined) msg.stats = f;
  }
  if (paintQueued) return;
  paintQueued = true;
  requestAnimationFrame(() => {
    paintQueued = false;
    if (!row.isConnected) return;
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fillAssistant(row.querySelector(".bubble"), msg);
    if (atBottom) box.scrollTop = box.scrollHeight;
  });
}

function stop() {
  if (state.busy) state.busy.controller.abort();
}

function setBusy(on) {
  $("stop").hidden = !on;
  $("send").hidden = on;
}

function editTurn(c, i, row) {
  if (state.busy) return;
  const m = c.messages[i];
  const bubble = row.querySelector(".bubble");
  const area = el("textarea", "edit-area");
  area.value = m.content;
  const bar = el("div", "edit-bar");
  bar.append(action("Cancel", () => render()), action("Save & send", () => {
    m.content = area.value;
    c.messages.splice(i + 1);
    ask(c);
  }));
  bar.lastChild.classList.add("primary");
  bubble.replaceChildren(area, bar);
  row.querySelector(".actions")?.remove();
  area.focus();
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); bar.lastChild.click(); }
  });
}

function regenerate(c) {
  if (state.busy || c.messages.at(-1)?.role !== "assistant") return;
  c.messages.pop();
  ask(c);
}

// ---------------------------------------------------------------- attachments

async function attach(files) {
  for (const file of files) {
    if (file.type.startsWith("image/") && state.model && !state.model.vision) {
      toast(`${file.name || "image"}: this model takes text only; images cannot be sent to it`);
      continue;
    }
    const form = new FormData();
    form.append("file", file, "upload");  // the server never uses the client's filename
    try {
      const r = await api("/api/upload", { method: "POST", body: form });
      const u = await r.json();
      if (!r.ok) throw new Error(u.error || `HTTP ${r.status}`);
      if (u.mediaType === "image" && !state.model?.vision) {
        throw new Error("this model takes text only; images cannot be sent to it");
      }
      state.pending.push({ kind: u.mediaType, id: u.id, name: file.name || "pasted", text: u.textContent,
        truncated: u.truncated });
      renderPending();
    } catch (e) {
      toast(`${file.name || "file"}: ${e.message}`);
    }
  }
}

function toast(text) {
  const t = $("error");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

// ---------------------------------------------------------------- settings

function openSettings() { fillSettings(state.settings); }

function fillSettings(s) {
  $("sSystem").value = s.system;
  $("sTemp").value = s.temperature;
  $("sTopP").value = s.topP;
  $("sTopK").value = s.topK;
  $("sMax").value = s.maxTokens;
  $("sThink").checked = s.think;
  $("sTools").value = s.tools;
  $("sKey").value = localStorage.getItem(STORE.key) || "";
  $("sTools").setCustomValidity("");
  if (!$("settings").open) $("settings").showModal();
}

function num(id, lo, hi, fallback) {
  const v = parseFloat($(id).value);
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
}

function toolsValid() {
  const text = $("sTools").value.trim();
  let ok = !text;
  try { ok = ok || Array.isArray(JSON.parse(text)); } catch { ok = false; }
  $("sTools").setCustomValidity(ok ? "" : "Tools must be a JSON array of function definitions");
  return ok;
}

function saveSettings() {
  state.settings = {
    system: $("sSystem").value,
    temperature: num("sTemp", 0, 2, DEFAULTS.temperature),
    topP: num("sTopP", 0, 1, DEFAULTS.topP),
    topK: Math.round(num("sTopK", 0, 1e6, DEFAULTS.topK)),
    maxTokens: Math.round(num("sMax", 1, 1e6, DEFAULTS.maxTokens)),
    think: $("sThink").checked,
    tools: $("sTools").value,
  };
  localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
  $("thinkQuick").checked = state.settings.think;
  const key = $("sKey").value.trim();
  if (key) localStorage.setItem(STORE.key, key);
  else localStorage.removeItem(STORE.key);
  if (!state.model) loadModel();
}

// ---------------------------------------------------------------- wiring

function autosize() {
  const t = $("input");
  t.style.height = "auto";
  t.style.height = Math.min(t.scrollHeight, 240) + "px";
}
function openDrawer() { document.body.classList.add("drawer"); $("scrim").hidden = false; }
function closeDrawer() { document.body.classList.remove("drawer"); $("scrim").hidden = true; }

function wire() {
  const input = $("input");
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(input.value); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(input.value); }
  });
  input.addEventListener("input", autosize);
  input.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) { e.preventDefault(); attach(files); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.busy) { e.preventDefault(); stop(); }
  });
  $("stop").addEventListener("click", stop);
  $("newChat").addEventListener("click", () => { newConversation(); closeDrawer(); });
  $("fileInput").addEventListener("change", (e) => { attach([...e.target.files]); e.target.value = ""; });
  $("menu").addEventListener("click", openDrawer);
  $("scrim").addEventListener("click", closeDrawer);
  $("openSettings").addEventListener("click", openSettings);
  $("settingsForm").addEventListener("submit", (e) => {
    if (e.submitter?.value !== "save") return;
    if (!toolsValid()) { e.preventDefault(); $("sTools").reportValidity(); return; }
    saveSettings();
  });
  $("sTools").addEventListener("input", () => $("sTools").setCustomValidity(""));
  $("sReset").addEventListener("click", () => fillSettings(DEFAULTS));
  $("thinkQuick").checked = state.settings.think;
  $("thinkQuick").addEventListener("change", (e) => {
    state.settings.think = e.target.checked;
    localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
  });
  let depth = 0;
  window.addEventListener("dragenter", (e) => { if (e.dataTransfer?.types.includes("Files")) { depth++; $("drop").hidden = false; } });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    if (e.dataTransfer?.files.length) attach([...e.dataTransfer.files]);
  });
}

async function main() {
  wire();
  render();
  await waitReady();
  await loadModel();
  pollQueue();
  $("input").focus();
}

main();
