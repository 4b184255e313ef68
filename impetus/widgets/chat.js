// impetus Chat panel front end (anywidget ESM). Self-contained: no CDN, no build step.
//
// State from Python: traits `history`, `busy`, `status`, `error`, `model`, `models`,
// `system_prompt`, `temperature`, `top_p`, `max_tokens`, `show_probabilities`.
// An assistant message may carry `tokens` ([[text, p, [[alt, p], ...]], ...]: coloured by p) and
// `json: true` (a constrained answer, shown formatted); a delta may carry the step's `tokens`.
// Streaming: custom messages {type: "start"} / {type: "delta", text} / {type: "end"}; the
// answer's final form arrives once, in `history`, when the turn ends.
// To Python: {type: "send", text} / {type: "stop"} / {type: "regenerate"} / {type: "clear"}.

// ------------------------------------------------------------------ a small Markdown renderer

function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

// Inline spans on escaped text; code spans are cut out first so that nothing inside them is styled.
function inline(text) {
  const codes = [];
  let s = escapeHtml(text).replace(/`([^`\n]+)`/g, (_, c) => {
    codes.push(c);
    return `\u0000${codes.length - 1}\u0000`;
  });
  s = s
    .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>')
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/__([^_\n]+)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~([^~\n]+)~~/g, "<del>$1</del>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

function codeBlock(lang, code) {
  const label = lang ? `<span class="impetus-code-lang">${escapeHtml(lang)}</span>` : "";
  return (
    `<div class="impetus-code">${label}<button class="impetus-copy-code" title="Copy code">Copy</button>` +
    `<pre><code data-lang="${escapeHtml(lang)}">${escapeHtml(code)}</code></pre></div>`
  );
}

export function renderMarkdown(src) {
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let para = [];
  let list = null; // {tag, items}
  let quote = [];

  const flushPara = () => {
    if (para.length) out.push(`<p>${para.map(inline).join("<br>")}</p>`);
    para = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join("")}</${list.tag}>`);
    list = null;
  };
  const flushQuote = () => {
    if (quote.length) out.push(`<blockquote>${renderMarkdown(quote.join("\n"))}</blockquote>`);
    quote = [];
  };
  const flushAll = () => {
    flushPara();
    flushList();
    flushQuote();
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/);
    if (fence) {
      flushAll();
      const code = [];
      let j = i + 1;
      while (j < lines.length && !lines[j].trim().startsWith(fence[1])) code.push(lines[j++]);
      out.push(codeBlock(fence[2], code.join("\n"))); // an unclosed fence (still streaming) runs to the end
      i = j;
      continue;
    }
    const quoted = line.match(/^\s*>\s?(.*)$/);
    if (quoted) {
      flushPara();
      flushList();
      quote.push(quoted[1]);
      continue;
    }
    flushQuote();
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flushAll();
      const n = heading[1].length;
      out.push(`<h${n}>${inline(heading[2])}</h${n}>`);
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flushAll();
      out.push("<hr>");
      continue;
    }
    const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
    const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (bullet || numbered) {
      flushPara();
      const tag = bullet ? "ul" : "ol";
      if (list && list.tag !== tag) flushList();
      if (!list) list = { tag, items: [] };
      list.items.push((bullet || numbered)[1]);
      continue;
    }
    if (!line.trim()) {
      flushAll();
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {
      list.items[list.items.length - 1] += " " + line.trim(); // continuation of a list item
      continue;
    }
    flushList();
    para.push(line);
  }
  flushAll();
  return out.join("");
}

// ------------------------------------------------------------------ helpers

function copyText(text, button) {
  const done = () => {
    if (!button) return;
    const old = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = old), 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text) && done());
  } else if (fallbackCopy(text)) {
    done();
  }
}

function fallbackCopy(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch (e) {
    ok = false;
  }
  area.remove();
  return ok;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function fmt(x, digits = 1) {
  return x === null || x === undefined ? null : Number(x).toFixed(digits);
}

function statsLine(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.tokens_per_second != null) parts.push(`${fmt(stats.tokens_per_second)} tok/s`);
  if (stats.ttft != null) parts.push(`TTFT ${fmt(stats.ttft * 1000, 0)} ms`);
  if (stats.completion_tokens != null) parts.push(`${stats.completion_tokens} tokens`);
  if (stats.cached_tokens != null && stats.prompt_tokens)
    parts.push(`cached ${stats.cached_tokens}/${stats.prompt_tokens} prompt tokens`);
  if (stats.finish_reason && stats.finish_reason !== "stop") parts.push(stats.finish_reason);
  return parts.join(" · ");
}

// ------------------------------------------------------------------ the view

// ------------------------------------------------------------------ tokens and JSON

// probability 0..1 -> a background from red (unlikely) through yellow to green (certain)
function probabilityColour(p) {
  if (p == null) return "transparent";
  return `hsla(${Math.round(120 * p)}, 75%, 72%, 0.55)`;
}

function tokenTitle([token, p, alts]) {
  const pct = (x) => (x == null ? "?" : `${(100 * x).toFixed(1)}%`);
  const lines = [`${JSON.stringify(token)}  ${pct(p)}`];
  for (const [alt, q] of alts || []) if (alt !== token) lines.push(`  ${JSON.stringify(alt)}  ${pct(q)}`);
  return lines.join("\n");
}

// tokens: [[text, probability, [[alternative, probability], ...]], ...] (see chat.py)
export function renderTokens(tokens) {
  const frag = document.createDocumentFragment();
  for (const t of tokens) {
    const span = el("span", { class: "impetus-tok", title: tokenTitle(t) });
    span.style.background = probabilityColour(t[1]);
    span.textContent = t[0];
    frag.append(span);
  }
  return frag;
}

export function renderJson(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  return el("pre", { class: "impetus-json" }, JSON.stringify(value, null, 2));
}

function render({ model, el: root }) {
  root.classList.add("impetus-chat");
  // JupyterLab: keys typed in the panel are text, not notebook shortcuts (Lumino checks this attribute)
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const subs = []; // every listener, removed when the view goes
  const on = (event, fn) => {
    model.on(event, fn);
    subs.push([event, fn]);
  };

  // header: model, status, settings
  const modelSelect = el("select", { class: "impetus-model", title: "Model" });
  const statusText = el("span", { class: "impetus-status" });
  const settingsToggle = el("button", { class: "impetus-btn impetus-settings-toggle", title: "Settings" }, "Settings");
  const header = el("div", { class: "impetus-header" }, modelSelect, statusText, settingsToggle);

  const system = el("textarea", { class: "impetus-system", rows: "2", placeholder: "System prompt" });
  const num = (name, label, step, min, max) => {
    const input = el("input", { type: "number", step, min, max, class: `impetus-param impetus-${name}` });
    input.value = model.get(name);
    input.addEventListener("change", () => {
      const v = Number(input.value);
      if (!Number.isNaN(v)) {
        model.set(name, name === "max_tokens" ? Math.max(1, Math.round(v)) : v);
        model.save_changes();
      }
    });
    on(`change:${name}`, () => (input.value = model.get(name)));
    return el("label", {}, label, input);
  };
  function probToggle() {
    const box = el("input", { type: "checkbox", class: "impetus-probabilities" });
    box.checked = model.get("show_probabilities");
    box.addEventListener("change", () => {
      model.set("show_probabilities", box.checked);
      model.save_changes();
    });
    on("change:show_probabilities", () => (box.checked = model.get("show_probabilities")));
    return el("label", { class: "impetus-prob-label" }, box, " colour tokens by probability (hover: alternatives)");
  }
  const settings = el(
    "div",
    { class: "impetus-settings", hidden: "" },
    system,
    el(
      "div",
      { class: "impetus-params" },
      num("temperature", "temperature ", "0.1", "0", "2"),
      num("top_p", "top_p ", "0.05", "0.01", "1"),
      num("max_tokens", "max_tokens ", "1", "1", "1000000"),
    ),
    probToggle(),
  );
  settingsToggle.addEventListener("click", () => settings.toggleAttribute("hidden"));

  const errorBox = el("div", { class: "impetus-error", hidden: "" });
  const log = el("div", { class: "impetus-log" });

  // input row
  const input = el("textarea", {
    class: "impetus-input",
    rows: "2",
    placeholder: "Ask something… (Enter sends, Shift+Enter: new line)",
  });
  const sendBtn = el("button", { class: "impetus-btn impetus-send", title: "Send" }, "Send");
  const stopBtn = el("button", { class: "impetus-btn impetus-stop", title: "Stop generating" }, "Stop");
  const regenBtn = el("button", { class: "impetus-btn impetus-regenerate", title: "Answer the last question again" }, "Regenerate");
  const clearBtn = el("button", { class: "impetus-btn impetus-clear", title: "Clear the conversation" }, "Clear");
  const exportBtn = el("button", { class: "impetus-btn impetus-export", title: "Download the conversation as JSON" }, "JSON");
  const controls = el("div", { class: "impetus-controls" }, sendBtn, stopBtn, regenBtn, clearBtn, exportBtn);
  const inputRow = el("div", { class: "impetus-input-row" }, input, controls);

  root.append(header, settings, errorBox, log, inputRow);

  // pending answer, built from deltas
  let pending = null; // {node, body, text, scheduled}

  const scrollDown = () => {
    log.scrollTop = log.scrollHeight;
  };

  const messageNode = (m) => {
    const role = m.role || "assistant";
    const body = el("div", { class: "impetus-body" });
    if (role === "error") body.textContent = m.content;
    else if (role === "user") body.textContent = m.content; // the user's words, shown as typed
    else if (m.json && renderJson(m.content || "")) body.append(renderJson(m.content));
    else if (m.tokens && m.tokens.length) body.append(renderTokens(m.tokens));
    else body.innerHTML = renderMarkdown(m.content || "");
    const copy = el("button", { class: "impetus-copy", title: "Copy message" }, "Copy");
    copy.addEventListener("click", () => copyText(m.content || "", copy));
    const head = el("div", { class: "impetus-role" }, role === "error" ? "error" : role, copy);
    const node = el("div", { class: `impetus-msg impetus-${role}` }, head, body);
    const line = statsLine(m.stats);
    if (line) node.append(el("div", { class: "impetus-stats" }, line));
    return node;
  };

  const renderHistory = () => {
    log.replaceChildren(...(model.get("history") || []).map(messageNode));
    if (pending && model.get("busy")) log.append(pending.node);
    scrollDown();
  };

  const startPending = () => {
    const body = el("div", { class: "impetus-body" });
    const head = el("div", { class: "impetus-role" }, "assistant");
    const node = el("div", { class: "impetus-msg impetus-assistant impetus-pending" }, head, body);
    body.append(el("span", { class: "impetus-cursor" }));
    pending = { node, body, text: "", tokens: null, scheduled: false };
    log.append(node);
    scrollDown();
  };

  const drawPending = () => {
    if (!pending) return;
    pending.scheduled = false;
    if (pending.tokens) {
      // coloured tokens: shown as they come, plain text (Markdown would split their spans)
      pending.body.replaceChildren(renderTokens(pending.tokens), el("span", { class: "impetus-cursor" }));
      scrollDown();
      return;
    }
    pending.body.innerHTML = renderMarkdown(pending.text);
    // the cursor goes at the end of the last line of text, not on a line of its own
    let target = pending.body;
    while (target.lastElementChild && /^(P|UL|OL|LI|BLOCKQUOTE|H[1-6])$/.test(target.lastElementChild.tagName))
      target = target.lastElementChild;
    target.append(el("span", { class: "impetus-cursor" }));
    scrollDown();
  };

  const syncButtons = () => {
    const busy = model.get("busy");
    sendBtn.disabled = busy;
    stopBtn.disabled = !busy;
    const hist = model.get("history") || [];
    regenBtn.disabled = busy || !hist.some((m) => m.role === "user");
    clearBtn.disabled = busy && hist.length === 0;
    root.classList.toggle("impetus-busy", busy);
  };

  const syncModels = () => {
    const current = model.get("model");
    const options = [...new Set([...(model.get("models") || []), current].filter(Boolean))];
    modelSelect.replaceChildren(...options.map((id) => el("option", { value: id }, id)));
    modelSelect.value = current;
  };

  const syncStatus = () => {
    statusText.textContent = model.get("status");
    const err = model.get("error");
    errorBox.textContent = err;
    errorBox.toggleAttribute("hidden", !err);
  };

  const send = () => {
    const text = input.value.trim();
    if (!text || model.get("busy")) return;
    model.send({ type: "send", text });
    input.value = "";
  };

  sendBtn.addEventListener("click", send);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      e.stopPropagation(); // JupyterLab must not run the cell
      send();
    }
  });
  stopBtn.addEventListener("click", () => model.send({ type: "stop" }));
  regenBtn.addEventListener("click", () => model.send({ type: "regenerate" }));
  clearBtn.addEventListener("click", () => model.send({ type: "clear" }));
  exportBtn.addEventListener("click", () => {
    const messages = [];
    if ((model.get("system_prompt") || "").trim()) messages.push({ role: "system", content: model.get("system_prompt") });
    for (const m of model.get("history") || [])
      if (m.role === "user" || m.role === "assistant") messages.push({ role: m.role, content: m.content });
    const blob = new Blob([JSON.stringify({ model: model.get("model"), messages }, null, 2)], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "conversation.json" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  log.addEventListener("click", (e) => {
    const btn = e.target.closest(".impetus-copy-code");
    if (btn) copyText(btn.parentElement.querySelector("code").textContent, btn);
  });
  modelSelect.addEventListener("change", () => {
    model.set("model", modelSelect.value);
    model.save_changes();
  });
  system.value = model.get("system_prompt");
  system.addEventListener("change", () => {
    model.set("system_prompt", system.value);
    model.save_changes();
  });

  const onCustom = (msg) => {
    if (msg.type === "start") {
      if (pending) pending.node.remove();
      startPending();
    } else if (msg.type === "delta") {
      if (!pending) startPending();
      pending.text += msg.text;
      if (msg.tokens) pending.tokens = (pending.tokens || []).concat(msg.tokens);
      if (!pending.scheduled) {
        pending.scheduled = true;
        requestAnimationFrame(drawPending); // one Markdown pass per frame, however fast tokens come
      }
    } else if (msg.type === "end") {
      if (pending) pending.node.remove();
      pending = null;
      renderHistory();
    }
  };

  const onHistory = () => {
    renderHistory();
    syncButtons();
  };
  const onBusy = () => {
    if (!model.get("busy") && pending) {
      pending.node.remove();
      pending = null;
    }
    syncButtons();
  };
  const onSystem = () => (system.value = model.get("system_prompt"));

  on("msg:custom", onCustom);
  on("change:history", onHistory);
  on("change:busy", onBusy);
  on("change:status", syncStatus);
  on("change:error", syncStatus);
  on("change:model", syncModels);
  on("change:models", syncModels);
  on("change:system_prompt", onSystem);

  syncModels();
  syncStatus();
  renderHistory();
  syncButtons();
  if (model.get("busy")) startPending(); // a view opened mid-answer shows the rest as it comes

  return () => {
    for (const [event, fn] of subs) model.off(event, fn);
  };
}

export default { render };
