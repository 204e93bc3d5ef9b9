// A small, safe Markdown renderer for untrusted model output.
// Contract: renderMarkdown(text) -> DocumentFragment built only with createElement/textContent
// (never innerHTML), so raw HTML in the text shows as text. Links keep only http(s): and
// mailto: targets (anything else, javascript: included, renders as plain text).
// Covers: fenced code blocks (with language label + copy), headings, lists, blockquotes,
// horizontal rules, tables, paragraphs; inline code, bold, italic, strike, links.
"use strict";

const LannerMarkdown = (() => {
  const SAFE_URL = /^(https?:\/\/|mailto:)/i;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- inline: `code`, **bold**, *italic* / _italic_, ~~strike~~, [text](url), bare URLs ----
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|(?<![\w])__([^\s_](?:[\s\S]*?[^\s])?)__(?![\w])|~~([\s\S]+?)~~|\*([^\s*][\s\S]*?)\*|(?<![\w])_([^\s_][\s\S]*?)_(?![\w])|\[([^\]\n]+)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/;

  function inline(parent, text) {
    while (text) {
      const m = INLINE.exec(text);
      if (!m) { parent.appendChild(document.createTextNode(text)); return; }
      if (m.index > 0) parent.appendChild(document.createTextNode(text.slice(0, m.index)));
      if (m[1]) parent.appendChild(el("code", "md-code", m[2].replace(/^ (.*) $/, "$1")));
      else if (m[3] !== undefined || m[4] !== undefined) inline(parent.appendChild(el("strong")), m[3] ?? m[4]);
      else if (m[5] !== undefined) inline(parent.appendChild(el("del")), m[5]);
      else if (m[6] !== undefined || m[7] !== undefined) inline(parent.appendChild(el("em")), m[6] ?? m[7]);
      else if (m[8] !== undefined) link(parent, m[8], m[9], m[0]);
      else link(parent, m[10], m[10], m[10]);
      text = text.slice(m.index + m[0].length);
    }
  }

  function link(parent, label, url, raw) {
    if (!SAFE_URL.test(url || "")) {  // javascript:, data:, relative...: shown as the text it was
      parent.appendChild(document.createTextNode(raw));
      return;
    }
    const a = el("a");
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    inline(a, label);
    parent.appendChild(a);
  }

  // ---- blocks ----
  function codeBlock(lang, lines) {
    const wrap = el("div", "md-pre");
    const head = el("div", "md-pre-head");
    head.appendChild(el("span", "md-lang", lang || "text"));
    const copy = el("button", "md-copy", "Copy");
    copy.type = "button";
    const code = lines.join("\n");
    copy.addEventListener("click", () => {
      const done = () => { copy.textContent = "Copied"; setTimeout(() => (copy.textContent = "Copy"), 1200); };
      if (navigator.clipboard) navigator.clipboard.writeText(code).then(done, () => {});
    });
    head.appendChild(copy);
    wrap.appendChild(head);
    const pre = el("pre");
    pre.appendChild(el("code", lang ? "lang-" + lang.replace(/[^\w-]/g, "") : "", code));
    wrap.appendChild(pre);
    return wrap;
  }

  function splitRow(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
  }

  function table(rows) {
    const t = el("table", "md-table");
    const head = t.appendChild(el("thead")).appendChild(el("tr"));
    for (const c of splitRow(rows[0])) inline(head.appendChild(el("th")), c);
    const body = t.appendChild(el("tbody"));
    for (const r of rows.slice(2)) {
      const tr = body.appendChild(el("tr"));
      for (const c of splitRow(r)) inline(tr.appendChild(el("td")), c);
    }
    const wrap = el("div", "md-table-wrap");
    wrap.appendChild(t);
    return wrap;
  }

  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

  function list(lines, i, parent) {
    const first = LIST_ITEM.exec(lines[i]);
    const ordered = /\d/.test(first[2]);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    const indent = first[1].length;
    let li = null;
    while (i < lines.length) {
      const line = lines[i];
      const m = LIST_ITEM.exec(line);
      if (m && m[1].length === indent) {
        li = node.appendChild(el("li"));
        const task = /^\[([ xX])\]\s+(.*)$/.exec(m[3]);
        if (task) {
          const box = el("input");
          box.type = "checkbox";
          box.disabled = true;
          box.checked = task[1] !== " ";
          li.appendChild(box);
          inline(li, " " + task[2]);
        } else {
          inline(li, m[3]);
        }
        i++;
      } else if (m && m[1].length > indent && li) {
        i = list(lines, i, li);
      } else if (line.trim() && /^\s+/.test(line) && li) {
        li.appendChild(document.createTextNode(" "));
        inline(li, line.trim());
        i++;
      } else {
        break;
      }
    }
    parent.appendChild(node);
    return i;
  }

  function blocks(text, parent) {
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    let para = [];
    const flush = () => {
      if (!para.length) return;
      const p = el("p");
      para.forEach((l, k) => {
        if (k) p.appendChild(l.endsWith("  ") || para[k - 1].endsWith("  ") ? el("br") : document.createTextNode(" "));
        inline(p, l.trim());
      });
      parent.appendChild(p);
      para = [];
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^\s*(```+|~~~+)\s*([\w+#.-]*)/.exec(line);
      if (fence) {
        flush();
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i++;  // the closing fence (or the end of a block still streaming)
        parent.appendChild(codeBlock(fence[2], body));
        continue;
      }
      const h = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
      if (h) { flush(); inline(parent.appendChild(el("h" + h[1].length, "md-h")), h[2]); i++; continue; }
      if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { flush(); parent.appendChild(el("hr")); i++; continue; }
      if (/^\s*>/.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
        blocks(quoted.join("\n"), parent.appendChild(el("blockquote")));
        continue;
      }
      if (LIST_ITEM.test(line) && (!para.length || !/^\s/.test(line))) { flush(); i = list(lines, i, parent); continue; }
      if (line.includes("|") && i + 1 < lines.length && /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/.test(lines[i + 1])) {
        flush();
        const rows = [line, lines[i + 1]];
        i += 2;
        while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(lines[i++]);
        parent.appendChild(table(rows));
        continue;
      }
      if (!line.trim()) { flush(); i++; continue; }
      para.push(line);
      i++;
    }
    flush();
  }

  function renderMarkdown(text) {
    const frag = document.createDocumentFragment();
    blocks(String(text || ""), frag);
    return frag;
  }

  return { renderMarkdown };
})();
