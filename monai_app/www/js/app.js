// The page: image layer, label layer (labels.js) and tool state kept apart; every server call is a
// standard MONAI Label endpoint (api.js) except the image rendering, which only fracseg's readers can do.
import * as api from "./api.js";
import { decodeLabel, encodeMaskPng } from "./codec.js";
import { LabelLayer } from "./labels.js";
import { answerStatus } from "./status.js";

const AUTO_MODEL = "fracture";
const INTERACTIVE_MODEL = "fracture_interactive";
const DISCARD_WINDOW_MS = 10_000;
const $ = (id) => document.getElementById(id);

const state = {
  imageId: null,
  width: 0,
  height: 0,
  clicks: [], // {x, y, kind: "foreground" | "background"}; x = column, y = row of the displayed image
  tool: "foreground",
  brush: 8,
  opacity: 45,
  maskVisible: true,
  dirty: false,
  seq: 0, // bumped whenever the mask is replaced, so late server answers are dropped
  interactive: { inFlight: false, pending: false, clickedAt: 0 },
  discardArmedAt: -Infinity, // a second switch soon after this discards unsaved changes
  timings: [], // click-to-mask and inference times (ms), newest last
  busy: 0,
};

const imageCanvas = $("image-layer");
const toolCanvas = $("tool-layer");
const labels = new LabelLayer($("label-layer"));

// ---------------------------------------------------------------- status and visible state
function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = kind;
}

function showError(err) {
  console.error(err);
  setStatus(err instanceof Error ? err.message : String(err), "error");
}

async function busy(fn) {
  state.busy += 1;
  document.body.dataset.busy = String(state.busy);
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    state.busy -= 1;
    document.body.dataset.busy = String(state.busy);
  }
}

function markDirty(dirty = true) {
  state.dirty = dirty;
  const el = $("state-dirty");
  el.textContent = dirty ? "unsaved" : "none";
  el.classList.toggle("dirty", dirty);
}

function refreshState() {
  const fg = state.clicks.filter((c) => c.kind === "foreground").length;
  $("state-clicks").textContent = `${fg} + / ${state.clicks.length - fg} \u2212`;
  const n = labels.count();
  const pct = state.width ? ((100 * n) / (state.width * state.height)).toFixed(2) : "0";
  $("state-mask").textContent = state.imageId ? `${n} px (${pct} %)` : "\u2013";
  for (const b of document.querySelectorAll("[data-tool]")) {
    b.setAttribute("aria-pressed", String(b.dataset.tool === state.tool));
  }
  const noImage = !state.imageId;
  for (const id of ["auto", "save", "undo", "redo", "clear-clicks"]) $(id).disabled = noImage;
  drawTools();
}

// ---------------------------------------------------------------- layout and the tool layer
function layout() {
  const stage = $("stage");
  const stack = $("stack");
  if (!state.width) return;
  const scale = Math.min(stage.clientWidth / state.width, stage.clientHeight / state.height);
  stack.style.width = `${Math.floor(state.width * scale)}px`;
  stack.style.height = `${Math.floor(state.height * scale)}px`;
  const dpr = window.devicePixelRatio || 1;
  toolCanvas.width = Math.floor(state.width * scale * dpr);
  toolCanvas.height = Math.floor(state.height * scale * dpr);
  drawTools();
}

let cursor = null; // last pointer position in image pixels, for the brush outline

function drawTools() {
  const ctx = toolCanvas.getContext("2d");
  ctx.clearRect(0, 0, toolCanvas.width, toolCanvas.height);
  if (!state.width) return;
  const k = toolCanvas.width / state.width; // tool-canvas pixels per image pixel
  const dpr = window.devicePixelRatio || 1;
  for (const c of state.clicks) {
    ctx.beginPath();
    ctx.arc((c.x + 0.5) * k, (c.y + 0.5) * k, 5 * dpr, 0, 2 * Math.PI);
    ctx.fillStyle = c.kind === "foreground" ? "#30e060" : "#3090ff";
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.5 * dpr;
    ctx.fill();
    ctx.stroke();
  }
  if (cursor && (state.tool === "paint" || state.tool === "erase")) {
    ctx.beginPath();
    ctx.arc(cursor.x * k, cursor.y * k, state.brush * k, 0, 2 * Math.PI);
    ctx.strokeStyle = state.tool === "paint" ? "#ff8040" : "#ffffff";
    ctx.lineWidth = dpr;
    ctx.stroke();
  }
}

function imagePoint(event) {
  const rect = toolCanvas.getBoundingClientRect();
  const fx = ((event.clientX - rect.left) / rect.width) * state.width;
  const fy = ((event.clientY - rect.top) / rect.height) * state.height;
  return {
    fx,
    fy,
    x: Math.min(state.width - 1, Math.max(0, Math.floor(fx))),
    y: Math.min(state.height - 1, Math.max(0, Math.floor(fy))),
  };
}

// ---------------------------------------------------------------- images
async function refreshList() {
  const images = await api.listImages();
  const list = $("image-list");
  list.replaceChildren(
    ...images.map((im) => {
      const option = new Option(`${im.labels.includes("final") ? "\u2713 " : "\u2003"}${im.id}`, im.id);
      option.selected = im.id === state.imageId;
      return option;
    }),
  );
  return images;
}

async function openImage(imageId) {
  const armed = performance.now() - state.discardArmedAt < DISCARD_WINDOW_MS;
  if (state.dirty && !armed && imageId !== state.imageId) {
    state.discardArmedAt = performance.now();
    $("image-list").value = state.imageId;
    setStatus(`Unsaved changes on ${state.imageId}: save (S), or switch again within 10 s to discard them.`, "warn");
    return false;
  }
  state.discardArmedAt = -Infinity;
  const response = await fetch(api.imageUrl(imageId));
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new api.ApiError(`cannot show image ${imageId} (HTTP ${response.status}): ${body.detail ?? response.statusText}`);
  }
  const bitmap = await createImageBitmap(await response.blob());
  state.seq += 1;
  state.interactive.pending = false;
  state.imageId = imageId;
  state.width = bitmap.width;
  state.height = bitmap.height;
  state.clicks = [];
  imageCanvas.width = bitmap.width;
  imageCanvas.height = bitmap.height;
  imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  labels.reset(bitmap.width, bitmap.height);
  state.brush = Math.max(2, Math.round(Math.min(bitmap.width, bitmap.height) / 80));
  $("brush").value = String(state.brush);
  $("brush-out").textContent = String(state.brush);
  $("image-list").value = imageId;
  $("image-name").textContent = `${imageId} \u2014 ${bitmap.width}\u00d7${bitmap.height}`;
  markDirty(false);
  layout();
  refreshState();
  setStatus(`Opened ${imageId}. Auto-segment (A), click (F/B) or paint (P).`);
  return true;
}

async function nextSample() {
  const strategy = $("strategy").value;
  const id = await api.nextSample(strategy);
  if (!id) {
    setStatus(`No image left for strategy ${strategy}.`, "warn");
    return;
  }
  if (![...$("image-list").options].some((o) => o.value === id)) await refreshList(); // added since
  await openImage(id);
}

function moveInList(step) {
  const list = $("image-list");
  const index = Math.min(list.options.length - 1, Math.max(0, list.selectedIndex + step));
  if (list.options[index]) busy(() => openImage(list.options[index].value));
}

// ---------------------------------------------------------------- inference
async function applyLabel(buffer, seq, imageId) {
  const mask = await decodeLabel(buffer, state.width, state.height);
  if (seq !== state.seq || imageId !== state.imageId) return false; // overtaken by a newer action
  labels.setMask(mask);
  markDirty(true);
  refreshState();
  await new Promise((resolve) => requestAnimationFrame(() => resolve())); // the mask is on screen
  return true;
}

async function autoSegment() {
  if (!state.imageId) return;
  labels.snapshot(state.clicks);
  state.clicks = [];
  state.interactive.pending = false; // clicks queued before this are dropped with the clicks
  const seq = ++state.seq;
  const imageId = state.imageId;
  const start = performance.now();
  setStatus(`Running ${AUTO_MODEL} on ${imageId}\u2026`);
  const { buffer, params } = await api.infer(AUTO_MODEL, imageId);
  if (await applyLabel(buffer, seq, imageId)) {
    const ms = performance.now() - start;
    state.timings.push({ kind: "auto", ms, clicks: 0 });
    $("state-infer").textContent = `${AUTO_MODEL}: ${(ms / 1000).toFixed(2)} s`;
    setStatus(answerStatus(AUTO_MODEL, imageId, labels.count(), params));
  }
}

async function addClick(point, kind, clickedAt) {
  labels.snapshot(state.clicks);
  state.clicks.push({ x: point.x, y: point.y, kind });
  state.interactive.clickedAt = clickedAt;
  refreshState();
  await runInteractive();
}

// One request at a time; clicks made meanwhile are sent together (each request carries all clicks).
async function runInteractive() {
  const job = state.interactive;
  if (job.inFlight) {
    job.pending = true;
    return;
  }
  job.inFlight = true;
  try {
    do {
      job.pending = false;
      const imageId = state.imageId;
      const clicks = state.clicks.slice();
      const clickedAt = job.clickedAt;
      const seq = ++state.seq;
      const points = (kind) => clicks.filter((c) => c.kind === kind).map((c) => [c.x, c.y, 0]);
      setStatus(`Running ${INTERACTIVE_MODEL} with ${clicks.length} click(s)\u2026`);
      const { buffer } = await api.infer(INTERACTIVE_MODEL, imageId, points("foreground"), points("background"));
      if (await applyLabel(buffer, seq, imageId)) {
        const ms = performance.now() - clickedAt;
        state.timings.push({ kind: "click", ms, clicks: clicks.length });
        $("state-infer").textContent = `${INTERACTIVE_MODEL}: click to mask ${(ms / 1000).toFixed(2)} s`;
        setStatus(`${INTERACTIVE_MODEL}: ${labels.count()} fracture pixels after ${clicks.length} click(s).`);
      }
    } while (job.pending);
  } finally {
    job.inFlight = false;
  }
}

// ---------------------------------------------------------------- editing
function undo() {
  const clicks = labels.undo(state.clicks);
  if (clicks === null) return setStatus("Nothing to undo.");
  state.seq += 1;
  state.clicks = clicks;
  markDirty(true);
  refreshState();
  setStatus("Undone.");
}

function redo() {
  const clicks = labels.redo(state.clicks);
  if (clicks === null) return setStatus("Nothing to redo.");
  state.seq += 1;
  state.clicks = clicks;
  markDirty(true);
  refreshState();
  setStatus("Redone.");
}

function clearClicks() {
  if (!state.clicks.length) return;
  labels.snapshot(state.clicks);
  state.clicks = [];
  refreshState();
  setStatus("Clicks cleared; the mask stays.");
}

async function save() {
  if (!state.imageId) return;
  const imageId = state.imageId;
  const png = await encodeMaskPng(labels.mask, state.width, state.height);
  const result = await api.saveLabel(imageId, png, "final");
  if (imageId === state.imageId) markDirty(false);
  await refreshList();
  setStatus(`Saved the final label of ${imageId} (${labels.count()} fracture pixels) as ${result.label ?? imageId}.`);
}

function setOpacity(value) {
  state.opacity = Math.min(100, Math.max(0, value));
  $("opacity").value = String(state.opacity);
  $("opacity-out").textContent = String(state.opacity);
  $("label-layer").style.opacity = state.maskVisible ? String(state.opacity / 100) : "0";
}

function setBrush(value) {
  state.brush = Math.min(60, Math.max(1, value));
  $("brush").value = String(state.brush);
  $("brush-out").textContent = String(state.brush);
  drawTools();
}

function setTool(tool) {
  state.tool = tool;
  refreshState();
}

// ---------------------------------------------------------------- pointer and keyboard
let strokeFrom = null;

toolCanvas.addEventListener("contextmenu", (e) => e.preventDefault());
toolCanvas.addEventListener("pointerdown", (e) => {
  if (!state.imageId) return;
  const clickedAt = performance.now();
  const p = imagePoint(e);
  const brushing = state.tool === "paint" || state.tool === "erase";
  if (brushing && e.button === 0) {
    toolCanvas.setPointerCapture(e.pointerId);
    labels.snapshot(state.clicks);
    strokeFrom = { x: p.fx, y: p.fy };
    labels.stroke(strokeFrom, strokeFrom, state.brush, state.tool === "paint" ? 1 : 0);
    markDirty(true);
    return;
  }
  let kind = brushing ? "background" : state.tool;
  if (e.button === 2) kind = "background";
  else if (e.button !== 0) return;
  else if (e.shiftKey) kind = kind === "foreground" ? "background" : "foreground";
  if (!brushing || e.button === 2) busy(() => addClick(p, kind, clickedAt));
});
toolCanvas.addEventListener("pointermove", (e) => {
  if (!state.imageId) return;
  const p = imagePoint(e);
  cursor = { x: p.fx, y: p.fy };
  if (strokeFrom) {
    const to = { x: p.fx, y: p.fy };
    labels.stroke(strokeFrom, to, state.brush, state.tool === "paint" ? 1 : 0);
    strokeFrom = to;
  }
  drawTools();
});
const endStroke = () => {
  if (strokeFrom) {
    strokeFrom = null;
    refreshState();
    setStatus(`${state.tool === "paint" ? "Painted" : "Erased"}: ${labels.count()} fracture pixels (unsaved).`);
  }
};
toolCanvas.addEventListener("pointerup", endStroke);
toolCanvas.addEventListener("pointercancel", endStroke);
toolCanvas.addEventListener("pointerleave", () => {
  cursor = null;
  drawTools();
});

const KEYS = {
  n: () => busy(nextSample),
  a: () => busy(autoSegment),
  f: () => setTool("foreground"),
  b: () => setTool("background"),
  p: () => setTool("paint"),
  e: () => setTool("erase"),
  "[": () => setBrush(state.brush - 1),
  "]": () => setBrush(state.brush + 1),
  "-": () => setOpacity(state.opacity - 10),
  "=": () => setOpacity(state.opacity + 10),
  "+": () => setOpacity(state.opacity + 10),
  h: () => {
    state.maskVisible = !state.maskVisible;
    setOpacity(state.opacity);
  },
  z: undo,
  y: redo,
  c: clearClicks,
  s: () => busy(save),
  arrowup: () => moveInList(-1),
  arrowdown: () => moveInList(1),
};

document.addEventListener("keydown", (e) => {
  const key = e.key.toLowerCase();
  const inField = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
  if (e.ctrlKey || e.metaKey) {
    const action = { z: e.shiftKey ? redo : undo, y: redo, s: () => busy(save) }[key];
    if (action) {
      e.preventDefault();
      action();
    }
    return;
  }
  if (e.altKey || (inField && (key.startsWith("arrow") || e.target.type === "range"))) return;
  const action = KEYS[key];
  if (action) {
    e.preventDefault();
    action();
  }
});

window.addEventListener("beforeunload", (e) => {
  if (state.dirty) e.preventDefault();
});
window.addEventListener("resize", layout);

// ---------------------------------------------------------------- start
function bindControls() {
  $("next-sample").addEventListener("click", () => busy(nextSample));
  $("auto").addEventListener("click", () => busy(autoSegment));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("clear-clicks").addEventListener("click", clearClicks);
  $("save").addEventListener("click", () => busy(save));
  $("image-list").addEventListener("change", (e) => busy(() => openImage(e.target.value)));
  $("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
  $("brush").addEventListener("input", (e) => setBrush(Number(e.target.value)));
  for (const b of document.querySelectorAll("[data-tool]")) {
    b.addEventListener("click", () => setTool(b.dataset.tool));
  }
}

async function start() {
  bindControls();
  setOpacity(state.opacity);
  refreshState();
  const info = await api.info();
  const models = Object.keys(info.models ?? {});
  const missing = [AUTO_MODEL, INTERACTIVE_MODEL].filter((m) => !models.includes(m));
  $("state-model").textContent = `${info.name ?? "MONAI Label"}: ${models.join(", ") || "no models"}`;
  const strategies = Object.keys(info.strategies ?? {});
  const preferred = strategies.filter((s) => s !== "random").concat(strategies.filter((s) => s === "random"));
  $("strategy").replaceChildren(...preferred.map((s) => new Option(s, s)));
  $("next-sample").disabled = strategies.length === 0;
  const images = await refreshList();
  if (missing.length) setStatus(`The server has no model ${missing.join(" or ")}; inference will fail.`, "error");
  else setStatus(`${images.length} image(s) in the datastore: pick one or press N for the next sample.`);
}

window.fracsegPage = { state, labels, openImage, autoSegment, save, undo };
busy(start).finally(() => {
  document.body.dataset.ready = "1";
});
