// pylenet serve: the drawing pad, the live prediction, its saliency heat map and the feature maps, on the server's JSON API.
"use strict";

const STROKE = 22;          // pen width on the 280x280 pad: MNIST strokes are 2-3 of 28 pixels
const MIN_INTERVAL = 50;    // ms between two requests while drawing
const TIMEOUT = 8000;       // ms before a request counts as unanswered
const RETRY = 3000;         // ms between pings while the server is unreachable
// The heat map: the input dimmed to DIM of its brightness, blended towards RAISE (positive
// saliency) or LOWER (negative) by |saliency| / max |saliency|. tests/test_serve_browser.py
// recomputes these pixels from the API's answer.
const DIM = 0.4, RAISE = [230, 40, 30], LOWER = [30, 90, 230];

const $ = (sel) => document.querySelector(sel);
const pad = $("#pad");
const ctx = pad.getContext("2d");

let stroke = null;          // {id, x, y} of the pointer that is drawing
let inked = false;          // something is drawn
let generation = 0;         // bumped by Clear: answers for an older drawing are dropped
let inFlight = false, pending = false, lastSent = 0, timer = null, retryTimer = null;

// ------------------------------------------------------------------------------- drawing

function blank() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function position(e) {
  const r = pad.getBoundingClientRect();
  // The pad may be shown smaller than 280 px (phones); the border is outside the drawing area.
  return {x: (e.clientX - r.left - pad.clientLeft) * pad.width / pad.clientWidth,
          y: (e.clientY - r.top - pad.clientTop) * pad.height / pad.clientHeight};
}

function segment(a, b) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = STROKE;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  ctx.stroke();
  inked = true;
}

function dot(p) {
  // A zero-length stroke draws nothing in some browsers: a filled disc always does.
  ctx.fillStyle = "#000";
  ctx.beginPath();
  ctx.arc(p.x, p.y, STROKE / 2, 0, 2 * Math.PI);
  ctx.fill();
  inked = true;
}

pad.addEventListener("pointerdown", (e) => {
  if (stroke !== null) return;            // one finger draws; a second one is ignored
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  pad.dataset.pointer = e.pointerType;     // "mouse", "pen" or "touch": shown to tests and tools
  const p = position(e);
  stroke = {id: e.pointerId, ...p};
  dot(p);                                 // a tap leaves a mark
  schedule();
});

pad.addEventListener("pointermove", (e) => {
  if (stroke === null || e.pointerId !== stroke.id) return;
  e.preventDefault();
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) {
    const p = position(ev);
    segment(stroke, p);
    stroke.x = p.x;
    stroke.y = p.y;
  }
  schedule();
});

for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  pad.addEventListener(type, (e) => {
    if (stroke === null || e.pointerId !== stroke.id) return;
    stroke = null;
    schedule();
  });
}

$("#clear").addEventListener("click", () => {
  generation += 1;
  inked = false;
  pending = false;
  blank();
  showEmpty();
});

// ---------------------------------------------------------------------------- requests

function schedule() {
  if (!inked) return;
  if (inFlight) { pending = true; return; }
  const wait = MIN_INTERVAL - (performance.now() - lastSent);
  if (wait > 0) {
    if (timer === null) timer = setTimeout(() => { timer = null; schedule(); busy(); }, wait);
    busy();
    return;
  }
  send();
}

function busy() {
  document.body.dataset.busy = inFlight || pending || timer !== null ? "1" : "0";
}

async function send() {
  inFlight = true;
  pending = false;
  lastSent = performance.now();
  const mine = generation;
  busy();
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), TIMEOUT);
  const started = performance.now();
  let resp = null, data = null, failure = null;
  try {
    const target = $("#target").value;   // "" asks for the predicted class
    const url = target === "" ? "api/features" : `api/features?target=${target}`;
    resp = await fetch(url, {method: "POST", body: blob, signal: abort.signal,
                                         headers: {"Content-Type": "image/png"}});
    data = await resp.json().catch(() => ({error: `HTTP ${resp.status} without a JSON body`}));
  } catch (err) {   // only the network lands here: a bug in show() must not read as "unreachable"
    failure = err.name === "AbortError" ? `no answer within ${TIMEOUT / 1000} s` : String(err.message || err);
  }
  clearTimeout(timeout);
  try {
    if (failure !== null) unreachable(failure);
    else {
      reachable();
      if (mine === generation) {
        if (resp.ok) show(data, performance.now() - started);
        else refused(resp.status, data.error || `HTTP ${resp.status}`);
      }
    }
  } finally {
    inFlight = false;
    if (pending) schedule();
    busy();
  }
}

function reachable() {
  if (!document.body.classList.contains("offline")) return;
  document.body.classList.remove("offline");
  $("#status").hidden = true;
  clearTimeout(retryTimer);
  retryTimer = null;
}

function unreachable(reason) {
  document.body.classList.add("offline");
  const status = $("#status");
  status.textContent = `The pylenet server at ${location.host} is unreachable (${reason}). ` +
    "Is \"pylenet serve\" still running? Retrying every few seconds…";
  status.hidden = false;
  if (retryTimer === null) retryTimer = setTimeout(ping, RETRY);
}

async function ping() {
  retryTimer = null;
  try {
    const resp = await fetch("api/model", {cache: "no-store"});
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    describe(await resp.json());
    reachable();
    schedule();
  } catch (err) {
    unreachable(String(err.message || err));
  }
}

// ----------------------------------------------------------------------------- display

function gray(canvas, rows, toByte) {
  const h = rows.length, w = rows[0].length;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const c = canvas.getContext("2d");
  const img = c.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = toByte(rows[y][x]), i = 4 * (y * w + x);
      img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
      img.data[i + 3] = 255;
    }
  }
  c.putImageData(img, 0, 0);
}

function canvases(grid, count, stage) {
  while (grid.children.length < count) {
    const c = document.createElement("canvas");
    c.className = "px fmap";
    c.dataset.stage = stage;
    grid.appendChild(c);
  }
  while (grid.children.length > count) grid.lastChild.remove();
  return [...grid.children];
}

function show(data, roundTrip) {
  const probs = data.probabilities;
  $("#label").textContent = String(data.label);
  $("#confidence").textContent = `probability ${probs[data.label].toFixed(3)}`;
  $("#message").textContent = "";
  document.querySelectorAll(".bar").forEach((bar, d) => {
    bar.classList.toggle("top", d === data.label);
    bar.dataset.p = String(probs[d]);
    bar.querySelector(".fill").style.width = `${(100 * probs[d]).toFixed(1)}%`;
    bar.querySelector(".pct").textContent = `${(100 * probs[d]).toFixed(1)}%`;
  });
  gray($("#input"), data.input, (v) => v);
  for (const layer of data.layers) {
    const grid = document.querySelector(`.stage[data-stage="${layer.name}"] .grid`);
    if (!grid) continue;
    const scale = layer.max > layer.min ? 255 / (layer.max - layer.min) : 0;   // one scale per layer
    canvases(grid, layer.maps.length, layer.name).forEach((c, k) =>
      gray(c, layer.maps[k], (v) => Math.round((v - layer.min) * scale)));
  }
  heat(data.input, data.saliency);
  $("#timing").textContent = `server ${data.time_ms.toFixed(1)} ms · round trip ${roundTrip.toFixed(0)} ms`;
  document.body.dataset.state = "predicted";
}

// The saliency over the input: which pixels would raise (red) or lower (blue) the score.
function heat(input, sal) {
  const canvas = $("#heat"), c = canvas.getContext("2d");
  const img = c.createImageData(28, 28);
  const scale = sal.max_abs > 0 ? 1 / sal.max_abs : 0;
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const s = sal.values[y][x], a = Math.min(1, Math.abs(s) * scale), to = s > 0 ? RAISE : LOWER;
      const base = DIM * input[y][x], i = 4 * (y * 28 + x);
      for (let k = 0; k < 3; k++) img.data[i + k] = Math.round(base * (1 - a) + to[k] * a);
      img.data[i + 3] = 255;
    }
  }
  c.putImageData(img, 0, 0);
  canvas.dataset.target = String(sal.target);
  $("#heat-info").textContent = `score of ${sal.target}: red raises it, blue lowers it ` +
    `(strongest ${sal.max_abs.toPrecision(2)} per pixel value)`;
}

function refused(status, message) {
  showEmpty();
  $("#message").textContent = status === 400 && /no digit found/.test(message)
    ? "Draw a bigger digit." : `The server refused the drawing: ${message}`;
}

function showEmpty() {
  $("#label").textContent = "–";
  $("#confidence").textContent = "draw a digit";
  $("#message").textContent = "";
  $("#timing").textContent = "";
  document.querySelectorAll(".bar").forEach((bar) => {
    bar.classList.remove("top");
    delete bar.dataset.p;
    bar.querySelector(".fill").style.width = "0";
    bar.querySelector(".pct").textContent = "";
  });
  for (const canvas of [$("#input"), $("#heat")]) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
  delete $("#heat").dataset.target;
  $("#heat-info").textContent = "red: more ink there raises the score; blue: lowers it";
  document.querySelectorAll(".stage[data-stage] .grid").forEach((grid) => grid.replaceChildren());
  document.body.dataset.state = "empty";
}

function describe(model) {
  const parts = [`${model.name} from ${model.source}`, `${model.parameters.toLocaleString("en")} parameters`];
  const t = model.training;
  if (t.epochs) parts.push(`trained ${t.epochs} epoch${t.epochs === 1 ? "" : "s"}`);
  if (t.final && typeof t.final.val_accuracy === "number") {
    parts.push(`test accuracy ${(100 * t.final.val_accuracy).toFixed(2)}%`);
  }
  $("#model-info").textContent = parts.join(" · ");
  const f = model.c1_filters, bound = Math.max(Math.abs(f.min), Math.abs(f.max)) || 1;
  canvases($("#filters .grid"), f.weights.length, "filters").forEach((c, k) =>
    gray(c, f.weights[k], (w) => Math.round(127.5 + 127.5 * w / bound)));
  const table = $("#layers table");
  table.replaceChildren();
  for (const layer of model.layers) {
    const row = table.insertRow();
    for (const text of [layer.name, layer.type, layer.output_shape.join("×"), layer.parameters.toLocaleString("en")]) {
      row.insertCell().textContent = text;
    }
  }
}

function buildBars() {
  const bars = $("#bars"), target = $("#target");
  for (let d = 0; d < 10; d++) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset.digit = String(d);
    bar.title = `explain the score of ${d}`;
    bar.innerHTML = `<span>${d}</span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    bar.addEventListener("click", () => { target.value = String(d); schedule(); });   // a bar picks its class
    bars.appendChild(bar);
    target.add(new Option(`class ${d}`, String(d)));
  }
  target.addEventListener("change", schedule);
}

buildBars();
blank();
showEmpty();
ping();
