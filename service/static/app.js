// toonforge web page: plain JS, no build step. Talks to the API of the same origin.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

// ---------------------------------------------------------------- HTTP helpers

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.status ? this.status + " " : ""}${this.code}: ${this.message}`;
  }
}

// ---------------------------------------------------------------- API key
// Kept in localStorage (this browser only) and sent as Authorization: Bearer on every call.
const KEY_STORAGE = "toonforge.apiKey";

function apiKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch (_) { return ""; }
}

function withKey(options = {}) {
  const key = apiKey();
  if (!key) return options;
  const headers = new Headers(options.headers || {});
  if (!headers.has("Authorization")) headers.set("Authorization", `Bearer ${key}`);
  return { ...options, headers };
}

/** A 401/403 says what to do about it, once, at the top of the page. */
function noteAuthFailure(status, message) {
  const box = $("#auth-notice");
  if (!box) return;
  const what = status === 401
    ? (apiKey() ? "The API key was refused (invalid or revoked)" : "This needs an API key")
    : "The API key lacks the scope this needs";
  box.textContent = `${what}: ${message}. Enter a key at the top right (toonforge keys create).`;
  box.hidden = false;
}

function setupApiKey() {
  const input = $("#api-key");
  const clear = $("#api-key-clear");
  const show = () => {
    const key = apiKey();
    input.value = "";
    input.placeholder = key ? `key ${key.split("_")[1] || "set"} in use` : "API key (optional)";
    clear.hidden = !key;
  };
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = input.value.trim();
    try { if (key) localStorage.setItem(KEY_STORAGE, key); } catch (_) { /* private mode */ }
    $("#auth-notice").hidden = true;
    show();
    refreshJobs(true);
    refreshSweeps(true);
    refreshModels();
  });
  clear.addEventListener("click", () => {
    try { localStorage.removeItem(KEY_STORAGE); } catch (_) { /* private mode */ }
    $("#auth-notice").hidden = true;
    show();
  });
  show();
}

/**
 * fetch() that turns the error envelope {"error": {"code", "message"}} into an ApiError.
 * `background: true` marks a call the page made by itself (first load, polling): a 401/403
 * there is not put at the top of the page, since the user asked for nothing yet.
 */
async function api(path, options = {}) {
  const { background = false, ...fetchOptions } = options;
  let response;
  try {
    response = await fetch(path, withKey(fetchOptions));
  } catch (err) {
    throw new ApiError(0, "network_error", `could not reach the server (${err.message})`);
  }
  if (!response.ok) {
    let code = "http_" + response.status;
    let message = response.statusText || "request failed";
    const text = await response.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      } else if (body && body.detail) {
        message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) {
      if (text) message = text.slice(0, 300);
    }
    if ((response.status === 401 || response.status === 403) && !background) {
      noteAuthFailure(response.status, message);
    }
    throw new ApiError(response.status, code, message);
  }
  return response;
}

/** An <img> whose picture needs the API key (an <img src> cannot send one). */
async function loadAuthImage(img, path) {
  try {
    setBlobImage(img, await (await api(path)).blob());
  } catch (err) {
    img.alt = `${img.alt}: ${err}`;
  }
}

/**
 * EventSource's interface over fetch(), which can send the API key (EventSource cannot).
 * Dispatches "event:" types to listeners, reconnects after 2 s with Last-Event-ID, and
 * calls onerror when the stream ends or fails (as EventSource does before reconnecting).
 */
class EventStream {
  constructor(path) {
    this.path = path;
    this.listeners = {};
    this.onerror = null;
    this.lastId = null;
    this.closed = false;
    this.controller = null;
    setTimeout(() => this.run(), 0);
  }
  addEventListener(kind, fn) { (this.listeners[kind] = this.listeners[kind] || []).push(fn); }
  close() {
    this.closed = true;
    if (this.controller) this.controller.abort();
  }
  async run() {
    while (!this.closed) {
      this.controller = new AbortController();
      try {
        const headers = this.lastId !== null ? { "Last-Event-ID": this.lastId } : {};
        const response = await api(this.path, { headers, signal: this.controller.signal });
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            this.dispatch(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
        if (!this.closed && this.onerror) await this.onerror(new Event("error"));
      } catch (err) {
        if (this.closed) return;
        if (this.onerror) await this.onerror(err);
        if (err instanceof ApiError && [401, 403, 404].includes(err.status)) return;
      }
      if (!this.closed) await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  dispatch(block) {
    let kind = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      let value = at < 0 ? "" : line.slice(at + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (id !== null) this.lastId = id;
    if (!data.length) return;
    const event = { type: kind, data: data.join("\n"), lastEventId: id };
    for (const fn of this.listeners[kind] || []) fn(event);
  }
}

async function apiJson(path, options) {
  return (await api(path, options)).json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function isAuthError(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403);
}

/**
 * A panel the page filled by itself, refused for want of a key: a quiet line in the panel
 * (its "empty" paragraph) instead of a red box; the page works on without a key.
 * `locked` null restores the paragraph's own text.
 */
function showLocked(node, locked) {
  if (!node) return;
  if (node.dataset.text === undefined) node.dataset.text = node.textContent;
  node.textContent = locked || node.dataset.text;
  if (locked) node.hidden = false;
}

function showError(node, err) {
  if (!node) return;
  if (!err) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  node.textContent = err instanceof ApiError ? err.toString() : String(err);
  node.hidden = false;
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
                                      minute: "2-digit", second: "2-digit" });
}

function fmtNum(x) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
}

// Object URLs we made for result images, released when replaced.
const objectUrls = new Map();
function setBlobImage(img, blob) {
  const old = objectUrls.get(img);
  if (old) URL.revokeObjectURL(old);
  const url = URL.createObjectURL(blob);
  objectUrls.set(img, url);
  img.src = url;
}

// ---------------------------------------------------------------- result cards

function card(id) {
  const node = document.getElementById(id);
  return {
    node,
    start() {
      node.dataset.state = "loading";
      showError($(".error", node), null);
      $(".version", node).textContent = "working…";
    },
    done(response) {
      node.dataset.state = "done";
      const version = response.headers.get("X-Model-Version");
      const seed = response.headers.get("X-Seed");
      const parts = [];
      if (version) parts.push(`X-Model-Version: ${version}`);
      if (seed) parts.push(`X-Seed: ${seed}`);
      const drawn = response.headers.get("X-Faces-Cartoonized");
      const found = response.headers.get("X-Faces-Found");
      if (found !== null) parts.push(`faces: ${drawn} of ${found} drawn by the head graph`);
      $(".version", node).textContent = parts.join(" · ");
    },
    fail(err) {
      node.dataset.state = "error";
      showError($(".error", node), err);
      $(".version", node).textContent = "";
    },
  };
}

/** Wait for an <img> to finish decoding the new src (or to fail). */
function imageLoaded(img) {
  if (img.complete && img.naturalWidth) return Promise.resolve();
  return new Promise((resolve, reject) => {
    img.addEventListener("load", () => resolve(), { once: true });
    img.addEventListener("error", () => reject(new Error("the image could not be displayed")),
                         { once: true });
  });
}

async function runImageCard(cardId, path, file, imgs, after = null) {
  const c = card(cardId);
  c.start();
  for (const img of imgs) img.removeAttribute("src");
  try {
    const responses = await Promise.all(path.map((p) => api(p, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    })));
    const face = responses[0].headers.get("X-Face-Found");
    const faceNote = $("#portrait-face", c.node);
    if (faceNote) {
      faceNote.textContent = face === "true" ? `face at ${responses[0].headers.get("X-Crop-Box")}`
        : "no face found: the whole image was drawn";
    }
    const blobs = await Promise.all(responses.map((r) => r.blob()));
    blobs.forEach((blob, i) => setBlobImage(imgs[i], blob));
    await Promise.all(imgs.map(imageLoaded));
    c.done(responses[0]);
    if (after) after(responses[0]);
    if (responses.length > 1) {
      const versions = new Set(responses.map((r) => r.headers.get("X-Model-Version")));
      if (versions.size > 1) {
        $(".version", c.node).textContent = "X-Model-Version: " + [...versions].join(" / ");
      }
    }
  } catch (err) {
    c.fail(err);
  }
}

async function runClassify(file) {
  const c = card("card-classify");
  const bars = $("#bars");
  c.start();
  bars.replaceChildren();
  try {
    const response = await api("/classify", {  // top_k left out: the API answers min(5, labels)
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    const body = await response.json();
    for (const p of body.predictions) {
      const pct = (p.score * 100).toFixed(1);
      bars.append(el("li", { class: "bar" },
        el("span", { class: "bar-label", text: p.label, title: p.label }),
        el("span", { class: "bar-track" },
          el("span", { class: "bar-fill", style: `width:${(100 * p.score).toFixed(1)}%` })),
        el("span", { class: "bar-value", text: `${pct}%` })));
    }
    c.done(response);
  } catch (err) {
    c.fail(err);
  }
}

let currentFile = null;

function useFile(file) {
  if (!file) return;
  currentFile = file;
  $("#file-name").textContent = `${file.name} · ${(file.size / 1024).toFixed(0)} KiB`;
  $("#rerun").disabled = false;
  const originalUrl = URL.createObjectURL(file);
  for (const id of ["orig-cartoon", "orig-matte"]) {
    const img = document.getElementById(id);
    const old = objectUrls.get(img);
    if (old) URL.revokeObjectURL(old);
    objectUrls.set(img, originalUrl);
    img.src = originalUrl;
  }
  runAll();
}

// ---------------------------------------------------------------- styles and faces

let currentStyle = null;  // null: the default cartoonize model

async function setupStyles() {
  const picker = $("#style-picker");
  let styles = [];
  try {
    styles = (await apiJson("/styles")).styles;
  } catch (err) {
    return;  // no picker: the default model serves
  }
  const choices = [{ name: null, label: "default", preview: null }, ...styles.map(
    (s) => ({ name: s.name, label: s.name, preview: s.preview,
              title: `${s.model}@${s.version}${s.compound ? " (faces by a head graph)" : ""}`
                     + ` · ${s.licence} · ${s.source}` }))];
  const buttons = choices.map((c) => el("button", {
    type: "button", role: "radio", class: "style-choice", title: c.title || "the default model",
    "aria-checked": String(c.name === currentStyle), "data-style": c.name || "",
    onclick: () => {
      currentStyle = c.name;
      for (const b of buttons) b.setAttribute("aria-checked", String(b === buttons[choices.indexOf(c)]));
      if (currentFile) runCartoonize(currentFile);
    },
  }, c.preview ? el("img", { src: c.preview, alt: "" }) : null, el("span", { text: c.label })));
  picker.replaceChildren(...buttons);
  picker.hidden = styles.length === 0;
}

/** Outline the faces the head graph drew (X-Faces-Boxes, input pixels) on the original. */
function drawFaceBoxes(response) {
  const layer = $("#face-boxes");
  layer.replaceChildren();
  const img = $("#orig-cartoon");
  let boxes = [];
  try {
    boxes = JSON.parse(response.headers.get("X-Faces-Boxes") || "[]");
  } catch (err) {
    return;
  }
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w || !h) return;
  // object-fit: contain inside a square: the image's scale and offsets in that square
  const side = Math.max(w, h);
  const ox = (side - w) / 2, oy = (side - h) / 2;
  for (const [x, y, bw, bh] of boxes) {
    layer.append(el("span", { class: "face-box", style:
      `left:${(100 * (ox + x) / side).toFixed(2)}%;top:${(100 * (oy + y) / side).toFixed(2)}%;`
      + `width:${(100 * bw / side).toFixed(2)}%;height:${(100 * bh / side).toFixed(2)}%` }));
  }
}

function runCartoonize(file) {
  const query = currentStyle ? `&style=${encodeURIComponent(currentStyle)}` : "";
  $("#face-boxes").replaceChildren();
  runImageCard("card-cartoonize", [`/cartoonize?format=png${query}`], file,
               [$("#cartoon-img")], drawFaceBoxes);
}

function runAll() {
  const file = currentFile;
  if (!file) return;
  runCartoonize(file);
  runImageCard("card-matte", ["/matte?output=mask", "/matte?output=cutout"], file,
               [$("#mask-img"), $("#cutout-img")]);
  runPortrait(file);
  runClassify(file);
}

// The drawing and its composite with the blurred photo (sigma, alpha from the sliders); the
// answer's headers say whether a face was found and where the demo's crop lies.
function portraitQuery(output) {
  const sigma = $("#portrait-sigma").value;
  const alpha = $("#portrait-alpha").value;
  return `/portrait?output=${output}&sigma=${sigma}&alpha=${alpha}`;
}

async function runPortrait(file) {
  await runImageCard("card-portrait", [portraitQuery("drawing"), portraitQuery("composite")],
                     file, [$("#drawing-img"), $("#composite-img")]);
}

function setupPortrait() {
  for (const name of ["sigma", "alpha"]) {
    const input = $(`#portrait-${name}`);
    input.addEventListener("input", () => { $(`#portrait-${name}-out`).value = input.value; });
    input.addEventListener("change", () => { if (currentFile) runPortrait(currentFile); });
  }
}

function setupDropzone() {
  const zone = $("#dropzone");
  const input = $("#file-input");
  input.addEventListener("change", () => useFile(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) useFile(file);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  // Dropping outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("#rerun").addEventListener("click", runAll);
}

// ---------------------------------------------------------------- generate

function setupGenerate() {
  $("#seed-random").addEventListener("click", () => {
    $("#seed").value = String(Math.floor(Math.random() * 1e9));
  });
  $("#generate-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const c = card("card-generate");
    const img = $("#grid-img");
    const params = new URLSearchParams({ n: $("#gen-n").value });
    const seed = $("#seed").value.trim();
    if (seed) params.set("seed", seed);
    if ($("#gen-rank").checked) params.set("rank_by_discriminator", "true");
    $("#gen-go").disabled = true;
    c.start();
    try {
      const response = await api(`/generate?${params}`, { method: "POST" });
      setBlobImage(img, await response.blob());
      await imageLoaded(img);
      c.done(response);
      const used = response.headers.get("X-Seed");
      if (used && !seed) $("#seed").placeholder = `random (last: ${used})`;
    } catch (err) {
      img.removeAttribute("src");
      c.fail(err);
    } finally {
      $("#gen-go").disabled = false;
    }
  });
}

// ---------------------------------------------------------------- loss chart (canvas)

const SERIES_COLOURS = ["#2f6fde", "#e0662b", "#1c9c6b", "#a54bd6", "#c8a000", "#d2386c"];

class LossChart {
  constructor(canvas, legend, xLabel = "step") {
    this.canvas = canvas;
    this.legend = legend;
    this.xLabel = xLabel; // the x axis: optimizer step (jobs) or epoch (sweeps)
    this.series = new Map(); // name -> [{x: step, y: value}]
    this.epochMarks = []; // steps where an epoch ended
    this.pending = false;
    this.emptyText = "waiting for training progress…";
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  reset() {
    this.emptyText = "waiting for training progress…";
    this.series.clear();
    this.epochMarks = [];
    this.draw();
  }

  add(step, losses, epochEnd) {
    for (const [name, value] of Object.entries(losses || {})) {
      if (typeof value !== "number" || !isFinite(value)) continue;
      if (!this.series.has(name)) this.series.set(name, []);
      const points = this.series.get(name);
      const last = points[points.length - 1];
      if (last && last.x === step) last.y = value;
      else if (last && last.x > step) { // a resumed job repeats steps: keep the newest
        while (points.length && points[points.length - 1].x >= step) points.pop();
        points.push({ x: step, y: value });
      } else points.push({ x: step, y: value });
    }
    if (epochEnd && !this.epochMarks.includes(step)) this.epochMarks.push(step);
    this.schedule();
  }

  pointCount() {
    let n = 0;
    for (const points of this.series.values()) n += points.length;
    return n;
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth || 640;
    const cssHeight = canvas.clientHeight || 260;
    if (canvas.width !== Math.round(cssWidth * ratio)) canvas.width = Math.round(cssWidth * ratio);
    if (canvas.height !== Math.round(cssHeight * ratio)) canvas.height = Math.round(cssHeight * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    canvas.dataset.points = String(this.pointCount());

    const pad = { left: 56, right: 14, top: 12, bottom: 30 };
    const w = cssWidth - pad.left - pad.right;
    const h = cssHeight - pad.top - pad.bottom;
    const all = [...this.series.values()].flat();
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    if (!all.length) {
      ctx.textAlign = "center";
      ctx.fillText(this.emptyText, cssWidth / 2, cssHeight / 2);
      this.legend.replaceChildren();
      return;
    }
    let xMin = Math.min(...all.map((p) => p.x));
    let xMax = Math.max(...all.map((p) => p.x));
    let yMin = Math.min(...all.map((p) => p.y));
    let yMax = Math.max(...all.map((p) => p.y));
    if (xMax === xMin) { xMin -= 1; xMax += 1; }
    if (yMax === yMin) { yMin -= Math.abs(yMin) * 0.1 || 1; yMax += Math.abs(yMax) * 0.1 || 1; }
    const ySpan = yMax - yMin;
    yMin -= ySpan * 0.05;
    yMax += ySpan * 0.05;
    const X = (x) => pad.left + ((x - xMin) / (xMax - xMin)) * w;
    const Y = (y) => pad.top + (1 - (y - yMin) / (yMax - yMin)) * h;

    // grid + y labels
    ctx.strokeStyle = "#e5e7eb";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = yMin + ((yMax - yMin) * i) / 4;
      const py = Math.round(Y(y)) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.left, py); ctx.lineTo(pad.left + w, py); ctx.stroke();
      ctx.fillText(fmtNum(y), pad.left - 6, py);
    }
    // epoch boundaries
    ctx.strokeStyle = "#cbd5e1";
    ctx.setLineDash([3, 3]);
    for (const step of this.epochMarks) {
      const px = Math.round(X(step)) + 0.5;
      ctx.beginPath(); ctx.moveTo(px, pad.top); ctx.lineTo(px, pad.top + h); ctx.stroke();
    }
    ctx.setLineDash([]);
    // x labels
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let i = 0; i <= 4; i++) {
      const x = xMin + ((xMax - xMin) * i) / 4;
      ctx.fillText(String(Math.round(x)), X(x), pad.top + h + 6);
    }
    ctx.fillText(this.xLabel, pad.left + w / 2, pad.top + h + 18 > cssHeight - 12 ? cssHeight - 12 : pad.top + h + 18);
    // axes
    ctx.strokeStyle = "#9ca3af";
    ctx.beginPath();
    ctx.moveTo(pad.left + 0.5, pad.top); ctx.lineTo(pad.left + 0.5, pad.top + h + 0.5);
    ctx.lineTo(pad.left + w, pad.top + h + 0.5);
    ctx.stroke();

    // series
    const legendItems = [];
    let i = 0;
    for (const [name, points] of this.series) {
      const colour = SERIES_COLOURS[i++ % SERIES_COLOURS.length];
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      points.forEach((p, k) => (k ? ctx.lineTo(X(p.x), Y(p.y)) : ctx.moveTo(X(p.x), Y(p.y))));
      ctx.stroke();
      for (const p of points) {
        ctx.beginPath(); ctx.arc(X(p.x), Y(p.y), 2.5, 0, Math.PI * 2); ctx.fill();
      }
      const last = points[points.length - 1];
      legendItems.push(el("span", { class: "legend-item" },
        el("span", { class: "swatch", style: `background:${colour}` }),
        `${name} ${fmtNum(last.y)}`));
    }
    this.legend.replaceChildren(...legendItems);
  }
}

// ---------------------------------------------------------------- jobs

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const jobsState = { selected: null, source: null, chart: null, jobs: [], samplesTimer: null };

function statusPill(status) {
  return el("span", { class: `pill status-${status}`, text: status });
}

async function refreshJobs(userAction = false) {
  try {
    const page = await apiJson("/jobs?limit=20", { background: !userAction });
    showError($("#jobs-error"), null);
    showLocked($("#jobs-empty"), null);
    jobsState.jobs = page.jobs;
    const body = $("#jobs-table tbody");
    body.replaceChildren(...page.jobs.map((job) => el("tr", {
      "data-job-id": job.id,
      class: job.id === jobsState.selected ? "selected" : "",
      tabindex: "0",
      onclick: () => selectJob(job.id),
      onkeydown: (e) => { if (e.key === "Enter") selectJob(job.id); },
    },
      el("td", { class: "mono", text: job.id.slice(0, 8), title: job.id }),
      el("td", { text: job.task }),
      el("td", {}, statusPill(job.status)),
      el("td", { text: `${job.epoch}/${job.total_epochs ?? "?"}` }),
      el("td", { text: job.target_model }),
      el("td", { text: fmtTime(job.created_at) }))));
    $("#jobs-empty").hidden = page.jobs.length > 0;
    // Follow the newest job when none is chosen yet.
    if (!jobsState.selected && page.jobs.length) selectJob(page.jobs[0].id);
    const current = page.jobs.find((j) => j.id === jobsState.selected);
    if (current) renderJob(current);
  } catch (err) {
    if (!userAction && isAuthError(err)) {
      showError($("#jobs-error"), null);
      showLocked($("#jobs-empty"), "Jobs need an API key with the train scope: enter one at"
        + " the top right (toonforge keys create).");
    } else {
      showError($("#jobs-error"), err);
    }
  }
}

// The job's MLflow run: a link to its page when the server knows the UI's URL (http(s)
// only: the address comes from a setting, and never runs as script), else the run id.
function trackingLink(tracking) {
  const url = tracking.mlflow_run_url;
  if (url && /^https?:\/\//i.test(url)) {
    return el("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono",
                     id: "job-tracking", text: "MLflow run " + tracking.mlflow_run_id.slice(0, 8) });
  }
  return el("span", { class: "mono", id: "job-tracking", text: "MLflow run " + tracking.mlflow_run_id });
}

function renderJob(job) {
  $("#job-title").textContent = `Job ${job.id.slice(0, 8)}`;
  $("#job-title").title = job.id;
  const pill = $("#job-status");
  pill.className = `pill status-${job.status}`;
  pill.textContent = job.status + (job.cancel_requested && !TERMINAL.has(job.status) ? " (cancelling)" : "");
  $("#job-cancel").hidden = TERMINAL.has(job.status);
  const facts = [
    ["task", job.task],
    ["base → target", `${job.base} → ${job.target_model}`],
    ["dataset", job.dataset_id],
    ["epoch", `${job.epoch}/${job.total_epochs ?? "?"}`],
    ["step", `${job.step}/${job.total_steps ?? "?"}`],
    ["ETA", job.eta_seconds != null && !TERMINAL.has(job.status) ? `${Math.round(job.eta_seconds)} s` : "–"],
    ["val", job.val_metrics ? Object.entries(job.val_metrics).map(([k, v]) => `${k} ${fmtNum(v)}`).join(", ") : "–"],
    ["result", job.result_version ? job.result_version + (job.activated ? " (activated)" : "") : "–"],
  ];
  if (job.tracking) facts.push(["tracking", trackingLink(job.tracking)]);
  $("#job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  showError($("#job-error"), job.error ? new ApiError(0, "job " + job.status, job.error) : null);
  if (TERMINAL.has(job.status) && jobsState.chart.emptyText.startsWith("waiting")) {
    jobsState.chart.emptyText = "no training progress was recorded";
    jobsState.chart.schedule();
  }
}

async function refreshJob(id) {
  try {
    const job = await apiJson(`/jobs/${encodeURIComponent(id)}`);
    if (jobsState.selected === id) renderJob(job);
    return job;
  } catch (err) {
    if (jobsState.selected === id) showError($("#job-error"), err);
    return null;
  }
}

function sampleImage(sample) {
  // Fetched with the API key (sample pictures need the train scope), shown as a blob.
  const img = el("img", { alt: sample.name });
  loadAuthImage(img, sample.url);
  return img;
}

async function refreshSamples(id) {
  try {
    const samples = await apiJson(`/jobs/${encodeURIComponent(id)}/samples`);
    if (jobsState.selected !== id) return;
    const box = $("#samples");
    if (!samples.length) {
      box.replaceChildren(el("p", { class: "empty", text: "No samples yet (one per epoch)." }));
      return;
    }
    const existing = new Map([...box.querySelectorAll("figure")].map((f) => [f.dataset.name, f]));
    box.replaceChildren(...samples.map((s) => existing.get(s.name) ||
      el("figure", { class: "sample", "data-name": s.name },
        el("a", { href: s.url, target: "_blank", rel: "noopener" }, sampleImage(s)),
        el("figcaption", { text: s.epoch != null ? `epoch ${s.epoch}` : s.name }))));
  } catch (err) {
    if (jobsState.selected === id) showError($("#job-error"), err);
  }
}

function closeStream() {
  if (jobsState.source) {
    jobsState.source.close();
    jobsState.source = null;
  }
}

function selectJob(id) {
  if (jobsState.selected === id && jobsState.source) return;
  closeStream();
  jobsState.selected = id;
  for (const row of document.querySelectorAll("#jobs-table tbody tr")) {
    row.classList.toggle("selected", row.dataset.jobId === id);
  }
  $("#job-detail").hidden = false;
  $("#job-detail").dataset.jobId = id;
  showError($("#job-error"), null);
  $("#samples").replaceChildren(el("p", { class: "empty", text: "No samples yet (one per epoch)." }));
  jobsState.chart.reset();
  refreshJob(id);
  refreshSamples(id);

  // The whole history replays from event 0, then live events until the terminal status.
  const source = new EventStream(`/jobs/${encodeURIComponent(id)}/events`);
  jobsState.source = source;
  const parse = (e) => { try { return JSON.parse(e.data); } catch (_) { return null; } };
  source.addEventListener("progress", (e) => {
    const ev = parse(e);
    if (!ev || jobsState.selected !== id) return;
    const d = ev.data || {};
    if (d.step != null && d.losses) jobsState.chart.add(d.step, d.losses, d.kind === "epoch");
  });
  source.addEventListener("sample", () => { if (jobsState.selected === id) refreshSamples(id); });
  source.addEventListener("status", async (e) => {
    const ev = parse(e);
    if (jobsState.selected !== id) return;
    const job = await refreshJob(id);
    const status = (ev && ev.data && ev.data.status) || (job && job.status);
    if (TERMINAL.has(status)) {
      if (jobsState.source === source) closeStream();
      refreshSamples(id);
      refreshJobs();
    }
  });
  source.addEventListener("log", (e) => {
    const ev = parse(e);
    if (ev && ev.data && ev.data.level === "error" && jobsState.selected === id) {
      showError($("#job-error"), new ApiError(0, "log", ev.data.message));
    }
  });
  source.onerror = async () => {
    // The stream reconnects by itself (with Last-Event-ID); stop when there is nothing more
    // to follow, or say why the stream failed.
    if (jobsState.source !== source) return;
    const job = await refreshJob(id);
    if (!job || TERMINAL.has(job.status)) closeStream();
  };
}

function setupJobs() {
  jobsState.chart = new LossChart($("#loss-chart"), $("#chart-legend"));
  $("#jobs-refresh").addEventListener("click", () => refreshJobs(true));
  $("#job-cancel").addEventListener("click", async () => {
    const id = jobsState.selected;
    if (!id) return;
    try {
      renderJob(await apiJson(`/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }));
    } catch (err) {
      showError($("#job-error"), err);
    }
  });
  refreshJobs();
  setInterval(() => { if (!document.hidden) refreshJobs(); }, 3000);
}

// ---------------------------------------------------------------- sweeps
// GET /sweeps lists them; GET /sweeps/{id} is the comparison: a table (one row per point)
// and the per-epoch gate metric of every point's job on one chart (one line per point).

const sweepsState = { selected: null, chart: null };

function pointLabel(point) {
  return `#${point.index} ` + Object.entries(point.values).map(([k, v]) => `${k}=${v}`).join(" ");
}

async function refreshSweeps(userAction = false) {
  try {
    const page = await apiJson("/sweeps?limit=50", { background: !userAction });
    showError($("#sweeps-error"), null);
    showLocked($("#sweeps-empty"), null);
    const select = $("#sweep-select");
    select.replaceChildren(...page.sweeps.map((s) => el("option", {
      value: s.id, selected: s.id === sweepsState.selected,
      text: `${s.id.slice(0, 8)} · ${s.task} · ${s.keys.join(", ")} · ${s.job_ids.length} points`,
    })));
    $("#sweeps-empty").hidden = page.sweeps.length > 0;
    if (!sweepsState.selected && page.sweeps.length) sweepsState.selected = page.sweeps[0].id;
    if (sweepsState.selected) await showSweep(sweepsState.selected);
  } catch (err) {
    if (!userAction && isAuthError(err)) {
      showError($("#sweeps-error"), null);
      showLocked($("#sweeps-empty"), "Sweeps need an API key with the train scope: enter one"
        + " at the top right (toonforge keys create).");
    } else {
      showError($("#sweeps-error"), err);
    }
  }
}

async function showSweep(id) {
  try {
    const sweep = await apiJson(`/sweeps/${encodeURIComponent(id)}`);
    if (sweepsState.selected !== id) return;
    renderSweep(sweep);
  } catch (err) {
    showError($("#sweeps-error"), err);
  }
}

function renderSweep(sweep) {
  const detail = $("#sweep-detail");
  detail.hidden = false;
  detail.dataset.sweepId = sweep.id;
  const metric = sweep.metric || "metric";
  const better = sweep.direction ? ` (${sweep.direction === "min" ? "lower" : "higher"} is better)` : "";
  $("#sweep-facts").textContent = `${sweep.task} on ${sweep.base.dataset_id} → ${sweep.base.target_model}; ` +
    `${metric}${better}; ` + Object.entries(sweep.status_counts).map(([k, n]) => `${n} ${k}`).join(", ");
  $("#sweep-final-head").textContent = `final ${metric}`;
  $("#sweep-best-head").textContent = `best ${metric}`;
  $("#sweep-table tbody").replaceChildren(...sweep.points.map((p) => el("tr", {
    "data-index": String(p.index), class: p.index === sweep.best_index ? "selected" : "",
  },
    el("td", { text: String(p.index) + (p.index === sweep.best_index ? " ★" : "") }),
    el("td", { class: "mono", text: Object.entries(p.values).map(([k, v]) => `${k}=${v}`).join(", ") }),
    el("td", {}, statusPill(p.status)),
    el("td", { text: `${p.epoch}/${p.total_epochs ?? "?"}` }),
    el("td", { text: fmtNum(p.final_metric) }),
    el("td", { text: p.best_metric == null ? "–" : `${fmtNum(p.best_metric)} (epoch ${p.best_epoch})` }),
    el("td", { text: p.result_version ? p.result_version + (p.activated ? " (activated)" : "") : "–",
               title: p.activation_reason || p.error || "" }),
    el("td", { class: "mono", text: p.job_id.slice(0, 8), title: p.job_id }))));
  const chart = sweepsState.chart;
  chart.series.clear();
  chart.emptyText = "no epoch has finished yet";
  for (const p of sweep.points) {
    for (const e of p.series) chart.add(e.epoch, { [pointLabel(p)]: e.value }, false);
  }
  chart.schedule();
}

function setupSweeps() {
  sweepsState.chart = new LossChart($("#sweep-chart"), $("#sweep-legend"), "epoch");
  $("#sweeps-refresh").addEventListener("click", () => refreshSweeps(true));
  $("#sweep-select").addEventListener("change", (e) => {
    sweepsState.selected = e.target.value;
    showSweep(sweepsState.selected);
  });
  refreshSweeps();
  setInterval(() => { if (!document.hidden) refreshSweeps(); }, 5000);
}

// ---------------------------------------------------------------- models

const modelsState = { selected: null, detail: null };

async function refreshModels() {
  try {
    const models = await apiJson("/models");
    showError($("#models-error"), null);
    const list = $("#model-list");
    list.replaceChildren(...models.map((m) => el("li", {},
      el("button", {
        type: "button",
        class: "model-item" + (m.name === modelsState.selected ? " selected" : ""),
        "data-model": m.name,
        onclick: () => selectModel(m.name),
      },
        el("span", { class: "model-name", text: m.name }),
        el("span", { class: "model-meta", text: `${m.task}${m.is_default ? " · default" : ""}` }),
        el("span", { class: "model-active", text: m.active ? `v${m.active} active` : "none active" })))));
    if (!models.length) list.append(el("li", { class: "empty", text: "The store is empty: import a model (see README)." }));
    if (modelsState.selected) await selectModel(modelsState.selected);
  } catch (err) {
    showError($("#models-error"), err);
  }
}

function rollbackTarget(detail) {
  // The server says what a rollback would activate (its activation history replayed);
  // null: nothing to roll back to, and the button stays off.
  return Number.isInteger(detail.rollback_target) ? detail.rollback_target : null;
}

function compactMetrics(metrics) {
  const entries = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number" || typeof v === "string");
  if (!entries.length) return "–";
  return entries.slice(0, 4).map(([k, v]) => `${k} ${fmtNum(v)}`).join(", ");
}

async function selectModel(name) {
  modelsState.selected = name;
  for (const item of document.querySelectorAll(".model-item")) {
    item.classList.toggle("selected", item.dataset.model === name);
  }
  try {
    const detail = await apiJson(`/models/${encodeURIComponent(name)}`);
    modelsState.detail = detail;
    $("#model-detail").hidden = false;
    $("#model-detail").dataset.model = name;
    $("#model-detail").dataset.active = detail.active ?? "";
    $("#model-title").textContent = `${detail.name} · ${detail.task}` +
      (detail.loaded_version ? ` · serving v${detail.loaded_version}` : "");
    const body = $("#versions-table tbody");
    body.replaceChildren(...[...detail.version_summaries].reverse().map((v) => {
      const active = v.version === detail.active;
      return el("tr", { "data-version": v.version, class: active ? "active-row" : "" },
        el("td", {}, `v${v.version} `, active ? el("span", { class: "pill status-succeeded", text: "active" }) : null),
        el("td", { text: v.arch }),
        el("td", { text: fmtTime(v.created_at) }),
        el("td", { text: v.source + (v.parent ? ` (from ${v.parent})` : ""), title: v.description || "" }),
        el("td", { text: v.parity_passed ? "passed" : "failed", class: v.parity_passed ? "ok" : "bad" }),
        el("td", { class: "metrics", text: compactMetrics(v.metrics) }),
        el("td", {}, active ? null : el("button", {
          type: "button", class: "small", disabled: !v.parity_passed,
          onclick: () => activate(name, v.version),
        }, "Activate")));
    }));
    const target = rollbackTarget(detail);
    const rollback = $("#rollback");
    rollback.disabled = target === null;
    rollback.textContent = target !== null ? `Roll back to v${target}` : "Roll back";
    rollback.title = target !== null ? `POST /models/${name}/rollback activates v${target}`
      : "no earlier active version to roll back to";
    rollback.dataset.target = target ?? "";
  } catch (err) {
    showError($("#models-error"), err);
  }
}

async function activate(name, version, verb = "activated") {
  return changeActive(name, `/models/${encodeURIComponent(name)}/activate`, { version }, verb);
}

async function rollback(name) {
  return changeActive(name, `/models/${encodeURIComponent(name)}/rollback`, null, "restored");
}

async function changeActive(name, path, body, verb) {
  const notice = $("#models-notice");
  notice.hidden = true;
  showError($("#models-error"), null);
  for (const b of document.querySelectorAll("#model-detail button")) b.disabled = true;
  let failure = null;
  try {
    const result = await apiJson(path, body === null ? { method: "POST" } : {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    notice.textContent = `${name}: v${result.active} ${verb}` +
      (result.previous ? ` (was v${result.previous})` : "") + ". New requests use it now.";
    notice.hidden = false;
  } catch (err) {
    failure = err;
  }
  await refreshModels();
  if (failure) showError($("#models-error"), failure); // after the refresh, which clears it
}

function setupModels() {
  $("#models-refresh").addEventListener("click", refreshModels);
  $("#rollback").addEventListener("click", () => {
    if (modelsState.selected) rollback(modelsState.selected);
  });
  refreshModels();
}

// ---------------------------------------------------------------- readiness

async function refreshReadiness() {
  const badge = $("#readiness");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    const models = body.models || [];
    const ready = models.filter((m) => m.ready).length;
    badge.textContent = body.ready ? `ready · ${ready} models` : `not ready · ${ready}/${models.length} models`;
    badge.className = "readiness " + (body.ready ? "ok" : "bad");
    badge.title = models.filter((m) => !m.ready).map((m) => `${m.name}: ${m.error || "not loaded"}`).join("\n") || "GET /readyz";
  } catch (err) {
    badge.textContent = "server unreachable";
    badge.className = "readiness bad";
  }
}

// ---------------------------------------------------------------- start

setupApiKey();
setupDropzone();
setupStyles();
setupPortrait();
setupGenerate();
setupJobs();
setupSweeps();
setupModels();
refreshReadiness();
setInterval(() => { if (!document.hidden) refreshReadiness(); }, 10000);
