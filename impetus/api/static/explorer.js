// The impetus API explorer: reads openapi.json from this server and sends requests to it.
// No framework, no CDN: it must work offline, inside Jupyter (browser session + _xsrf cookie)
// and against `impetus serve` (API key).
"use strict";

const prefix = document.body.dataset.prefix || "/";
const $ = (id) => document.getElementById(id);
const keyInput = $("key");
let spec = null;
let current = null;
let controller = null;

keyInput.value = sessionStorage.getItem("impetus-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("impetus-key", keyInput.value));

function cookie(name) {
  const m = document.cookie.match("(^|;)\\s*" + name + "\\s*=\\s*([^;]+)");
  return m ? decodeURIComponent(m.pop()) : "";
}

function headers(withBody) {
  const h = {};
  if (withBody) h["Content-Type"] = "application/json";
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  const xsrf = cookie("_xsrf");
  if (xsrf) h["X-XSRFToken"] = xsrf;
  return h;
}

function skeleton(schemaRef) {
  // a minimal body from a schema: its required properties with placeholder values
  const name = (schemaRef || "").split("/").pop();
  const schema = spec.components.schemas[name];
  if (!schema || !schema.properties) return {};
  const out = {};
  for (const prop of schema.required || []) {
    const p = schema.properties[prop] || {};
    out[prop] = p.type === "array" ? [] : p.type === "integer" || p.type === "number" ? 0 : "";
  }
  return out;
}

function show(method, path, op) {
  current = { method, path, op };
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.key === method + " " + path));
  $("op").hidden = false;
  $("op-method").textContent = method.toUpperCase();
  $("op-method").className = "method " + method;
  $("op-path").textContent = path;
  $("op-summary").textContent = op.summary || "";
  $("op-auth").textContent = op.description || "No credentials needed.";
  const params = $("op-params");
  params.replaceChildren();
  for (const p of op.parameters || []) {
    const label = document.createElement("label");
    label.textContent = p.name;
    const input = document.createElement("input");
    input.className = "param";
    input.dataset.name = p.name;
    input.dataset.in = p.in;
    label.appendChild(input);
    params.appendChild(label);
  }
  const body = op.requestBody && op.requestBody.content["application/json"];
  $("op-body-label").hidden = !body;
  $("op-body").value = body ? JSON.stringify(body.example || skeleton(body.schema.$ref), null, 2) : "";
  $("out").textContent = "";
  $("status").textContent = "";
  $("curl").textContent = "";
}

function url() {
  let path = current.path;
  const query = new URLSearchParams();
  document.querySelectorAll("input.param").forEach((input) => {
    if (input.dataset.in === "query") {
      if (input.value) query.set(input.dataset.name, input.value);
    } else {
      path = path.replace("{" + input.dataset.name + "}", encodeURIComponent(input.value));
    }
  });
  const search = query.toString();
  return prefix.replace(/\/$/, "") + path + (search ? "?" + search : "");
}

async function send() {
  const out = $("out");
  const status = $("status");
  const withBody = !$("op-body-label").hidden;
  let body;
  if (withBody) {
    try {
      body = JSON.stringify(JSON.parse($("op-body").value));
    } catch (e) {
      status.textContent = "The body is not valid JSON: " + e.message;
      return;
    }
  }
  const target = url();
  $("curl").textContent =
    "curl -X " + current.method.toUpperCase() + " " + location.origin + target +
    (keyInput.value ? " -H 'Authorization: Bearer $KEY'" : "") +
    (withBody ? " -H 'Content-Type: application/json' -d '" + body + "'" : "");
  out.textContent = "";
  status.textContent = "…";
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  try {
    const res = await fetch(target, {
      method: current.method.toUpperCase(),
      headers: headers(withBody),
      body,
      signal: controller.signal,
      credentials: "same-origin",
    });
    const type = res.headers.get("Content-Type") || "";
    status.textContent = res.status + " " + res.statusText + " · " + type;
    if (type.startsWith("text/event-stream")) {
      // print each server-sent event as it arrives
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out.textContent += decoder.decode(value, { stream: true });
        out.scrollTop = out.scrollHeight;
      }
    } else {
      const text = await res.text();
      try {
        out.textContent = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        out.textContent = text;
      }
    }
    status.textContent += " · " + Math.round(performance.now() - started) + " ms";
  } catch (e) {
    status.textContent = e.name === "AbortError" ? "stopped" : "request failed: " + e.message;
  } finally {
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

async function init() {
  const res = await fetch(prefix + "openapi.json", { credentials: "same-origin" });
  spec = await res.json();
  const nav = $("ops");
  nav.replaceChildren();
  const byTag = {};
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ["other"])[0];
      (byTag[tag] = byTag[tag] || []).push([method, path, op]);
    }
  }
  for (const [tag, ops] of Object.entries(byTag)) {
    const h = document.createElement("h4");
    h.textContent = tag;
    nav.appendChild(h);
    for (const [method, path, op] of ops) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.key = method + " " + path;
      b.innerHTML = '<span class="method ' + method + '"></span> ';
      b.firstChild.textContent = method.toUpperCase();
      b.appendChild(document.createTextNode(path));
      b.addEventListener("click", () => show(method, path, op));
      nav.appendChild(b);
    }
  }
  const first = spec.paths["/v1/chat/completions"];
  if (first) show("post", "/v1/chat/completions", first.post);
}

$("send").addEventListener("click", send);
$("stop").addEventListener("click", () => controller && controller.abort());
init().catch((e) => {
  $("ops").textContent = "Could not load openapi.json: " + e.message;
});
