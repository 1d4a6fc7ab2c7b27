// lmscope workbench: plain DOM, no framework, no build step. Views arrive as JSON blocks (heatmap, table, kv).
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

async function api(path, opts = {}) {
  const res = await fetch(path, opts);
  const body = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
  if (!res.ok) throw new Error(body.error || `${res.status}`);
  return body;
}

const fmt = (v) => typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) :
  v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v);

// ---------- tabs ----------
for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}
function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".pane")) p.hidden = p.id !== `pane-${name}`;
  if (name === "runs") loadRuns();
  if (name === "features") searchFeatures();
}

// ---------- tooltip ----------
const tip = $("#tooltip");
document.addEventListener("mouseover", (e) => {
  const cell = e.target.closest("[data-h]");
  if (!cell) { tip.hidden = true; return; }
  tip.textContent = cell.dataset.h; tip.hidden = false;
});
document.addEventListener("mousemove", (e) => {
  if (!tip.hidden) { tip.style.left = `${e.clientX + 14}px`; tip.style.top = `${e.clientY + 14}px`; }
});

// ---------- sortable tables ----------
function makeSortable(table, getRows, render) {
  let key = null, dir = 1;
  for (const th of table.querySelectorAll("th")) {
    th.addEventListener("click", () => {
      const k = th.dataset.key ?? th.cellIndex;
      dir = key === k ? -dir : 1; key = k;
      for (const o of table.querySelectorAll("th")) o.classList.remove("asc", "desc");
      th.classList.add(dir > 0 ? "asc" : "desc");
      const rows = [...getRows()].sort((a, b) => compare(a[k], b[k]) * dir);
      render(rows);
    });
  }
}
const compare = (a, b) => (a === null || a === undefined) - (b === null || b === undefined) ||
  (typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b)));

// ---------- blocks ----------
const PALETTES = { blue: [55, 105, 215], purple: [84, 39, 143], green: [0, 109, 44], red: [165, 15, 21] };
function colour(v, lo, hi, diverging, palette = "blue") {
  if (v === null || v === undefined) return "#eee";
  if (diverging) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1, t = Math.max(-1, Math.min(1, v / m));
    return t >= 0 ? `rgb(${255 - 180 * t},${255 - 140 * t},255)` : `rgb(255,${255 + 160 * t},${255 + 160 * t})`;
  }
  const t = hi > lo ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) : 0;
  const [r, g, b] = PALETTES[palette] || PALETTES.blue;
  return `rgb(${Math.round(255 + (r - 255) * t)},${Math.round(255 + (g - 255) * t)},${Math.round(255 + (b - 255) * t)})`;
}

function heatmap(b) {
  const flat = b.values.flat().filter((v) => v !== null);
  const lo = b.vmin ?? Math.min(...flat), hi = b.vmax ?? Math.max(...flat);
  const table = el("table", { class: "heat" });
  const head = el("tr", {}, el("th", { text: `${b.row_axis ?? ""} \\ ${b.col_axis ?? ""}` }));
  b.cols.forEach((c) => head.append(el("th", { text: c })));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  b.rows.forEach((r, i) => {
    const tr = el("tr", {}, el("th", { text: r }));
    b.values[i].forEach((v, j) => {
      const td = el("td", { "data-r": i, "data-c": j, text: b.text ? b.text[i][j] : "" });
      td.style.background = colour(v, lo, hi, b.diverging, b.palette);
      if (!b.text) { td.style.minWidth = "1.3rem"; td.style.height = "1.1rem"; }
      if (b.text && colour(v, lo, hi, b.diverging, b.palette) !== "#eee" && (v - lo) / ((hi - lo) || 1) > 0.6) td.style.color = "#fff";
      td.dataset.h = b.hover ? `${b.hover[i][j]}` : `${r} · ${b.cols[j]}: ${fmt(v)}`;
      td.dataset.v = v ?? "";
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(body);
  return el("div", { class: "block heatmap" }, el("h3", { text: b.title }), table);
}

function dataTable(b) {
  let rows = b.rows.map((r) => Object.fromEntries(r.map((v, i) => [i, v])));
  const table = el("table", { class: "sortable data" });
  table.append(el("thead", {}, el("tr", {}, ...b.columns.map((c, i) => el("th", { "data-key": i, text: c })))));
  const tbody = el("tbody");
  const render = (rs) => {
    tbody.replaceChildren(...rs.map((r) => el("tr", {}, ...b.columns.map((_, i) =>
      el("td", { class: typeof r[i] === "number" ? "num" : "", text: fmt(r[i]) })))));
  };
  render(rows); table.append(tbody);
  makeSortable(table, () => rows, render);
  return el("div", { class: "block table" }, el("h3", { text: b.title }), table);
}

function kv(b) {
  return el("div", { class: "block" }, el("h3", { text: b.title }),
    el("div", { class: "kv" }, ...Object.entries(b.items).map(([k, v]) => el("span", {}, el("b", { text: `${k}: ` }), fmt(v)))));
}

function renderView(v, root, files = [], runId = null) {
  root.replaceChildren();
  root.append(el("h2", { text: v.title }));
  root.append(el("div", { class: "kv key" }, ...Object.entries(v.key || {}).map(([k, x]) =>
    el("span", {}, el("b", { text: `${k}: ` }), fmt(x)))));
  for (const n of v.notes || []) root.append(el("p", { class: "meta", text: n }));
  for (const b of v.blocks || []) root.append(b.type === "heatmap" ? heatmap(b) : b.type === "table" ? dataTable(b) : kv(b));
  if (runId) {
    const link = (name) => `/api/file?run=${encodeURIComponent(runId)}&name=${encodeURIComponent(name)}`;
    const links = files.filter((f) => f.endsWith(".html") || f.endsWith(".json"));
    if (links.length) root.append(el("p", { class: "meta" }, "files: ",
      ...links.flatMap((f) => [el("a", { href: link(f), target: "_blank", text: f }), " "])));
    for (const f of files.filter((f) => f.endsWith(".png"))) {
      root.append(el("figure", {}, el("img", { src: link(f), alt: f, loading: "lazy" }), el("figcaption", { class: "meta", text: f })));
    }
  }
}

// ---------- runs ----------
let runs = [];
async function loadRuns() {
  try { runs = await api("/api/runs"); } catch (e) { $("#run-view").textContent = e.message; return; }
  renderRuns(runs);
}
function renderRuns(list) {
  const q = $("#runs-filter").value.toLowerCase();
  const rows = list.filter((r) => !q || `${r.kind} ${r.model} ${r.name} ${r.command} ${r.id}`.toLowerCase().includes(q));
  $("#runs-table tbody").replaceChildren(...rows.map((r) => {
    const tr = el("tr", { "data-run": r.id, title: r.command || r.id, onclick: () => openRun(r, tr) },
      el("td", { text: r.date.replace("T", " ").slice(0, 19) }), el("td", { text: r.kind }),
      el("td", { text: r.id }), el("td", { text: r.model }));
    return tr;
  }));
}
$("#runs-filter").addEventListener("input", () => renderRuns(runs));
makeSortable($("#runs-table"), () => runs, renderRuns);

async function openRun(r, tr) {
  for (const o of document.querySelectorAll("#runs-table tr.selected")) o.classList.remove("selected");
  tr?.classList.add("selected");
  const root = $("#run-view");
  root.replaceChildren(el("p", { class: "meta", text: "loading…" }));
  try {
    const v = await api(`/api/view?run=${encodeURIComponent(r.id)}`);
    renderView(v, root, r.files, r.id);
    window.lmscopeRendered = performance.now();
    if (r.command) root.insertBefore(el("p", { class: "meta" }, el("code", { text: r.command })), root.children[1]);
  } catch (e) { root.replaceChildren(el("p", { class: "error", text: e.message })); }
}

// ---------- try it ----------
let tasks = [], current = null;
async function loadTasks() {
  tasks = await api("/api/tasks");
  $("#task").replaceChildren(...tasks.map((t) => el("option", { value: t.name, text: t.name })));
  buildForm();
}
$("#task").addEventListener("change", buildForm);

function buildForm() {
  const t = tasks.find((x) => x.name === $("#task").value);
  $("#task-help").textContent = t.help;
  const field = (p) => {
    const id = `p-${p.name}`;
    const input = p.type === "bool" ? el("input", { id, name: p.name, type: "checkbox" }) :
      el("input", { id, name: p.name, placeholder: p.help });
    if (p.type === "bool") input.checked = !!p.default;
    else if (p.default !== null && p.default !== undefined) input.value = Array.isArray(p.default) ? p.default.join(",") : p.default;
    input.dataset.type = p.type;
    return el("label", { title: p.help }, `${p.name}${p.required ? " *" : ""} `, input);
  };
  $("#params").replaceChildren(...t.params.filter((p) => !p.config).map(field));
  $("#config-params").replaceChildren(...t.params.filter((p) => p.config).map(field));
  $("#options").hidden = !t.params.some((p) => p.config);
}

function value(input, p) {
  if (p.type === "bool") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return null;
  const num = (s) => (/^-?\d+$/.test(s) ? parseInt(s, 10) : /^-?[\d.eE+-]+$/.test(s) ? parseFloat(s) : s);
  if (p.type.startsWith("tuple")) return raw.split(",").map((s) => s.trim()).filter(Boolean).map(p.type.includes("int") ? num : (s) => s);
  if (p.type.startsWith("int")) return num(raw);
  if (p.type.startsWith("float")) return num(raw);
  return input.value;
}

function params(t) {
  const out = {};
  for (const p of t.params) {
    const input = document.getElementById(`p-${p.name}`);
    const v = value(input, p);
    const dflt = Array.isArray(p.default) ? p.default.join(",") : p.default;
    const same = p.type === "bool" ? v === !!p.default : input.value === String(dflt ?? "");
    if (v !== null && !(p.config && same)) out[p.name] = v;
  }
  return out;
}

$("#try-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = tasks.find((x) => x.name === $("#task").value);
  $("#job-error").hidden = true; $("#try-result").replaceChildren();
  try {
    const job = await api("/api/jobs", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ task: t.name, params: params(t) }) });
    follow(job);
  } catch (err) { showError(err.message); }
});

function showError(msg) { const p = $("#job-error"); p.textContent = msg; p.hidden = false; }

function follow(job) {
  current = job.id;
  $("#cancel-btn").disabled = false; $("#progress").hidden = false;
  $("#progress-bar").removeAttribute("value"); $("#progress-text").textContent = "queued";
  $("#job-state").textContent = `job ${job.id}: ${job.state}`;
  const source = new EventSource(`/api/jobs/${job.id}/events`);
  source.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    $("#job-state").textContent = `job ${job.id}: ${ev.type}`;
    if (ev.type === "progress") {
      if (ev.total) { $("#progress-bar").max = ev.total; $("#progress-bar").value = ev.n; }
      $("#progress-text").textContent = `${ev.desc} ${ev.n}${ev.total ? "/" + ev.total : ""}`;
    } else if (ev.type === "started") {
      $("#progress-text").textContent = "running";
    } else if (ev.type === "result") {
      const root = $("#try-result");
      if (ev.view) { renderView(ev.view, root); window.lmscopeRendered = performance.now(); }
      else root.replaceChildren(el("pre", { class: "gen", text: JSON.stringify(ev.payload, null, 2) }));
      loadModel();
    } else if (ev.type === "run") {
      $("#try-result").prepend(el("p", { class: "meta saved", text: `saved as run ${ev.run}` }));
    } else if (["done", "failed", "cancelled"].includes(ev.type)) {
      source.close(); current = null;
      $("#cancel-btn").disabled = true; $("#progress").hidden = true;
      if (ev.type !== "done") showError(`${ev.type}: ${ev.message}`);
    }
  };
}
$("#cancel-btn").addEventListener("click", () => { if (current) api(`/api/jobs/${current}`, { method: "DELETE" }).catch(showError); });

// ---------- features ----------
let features = [], timer = null;
$("#feature-query").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(searchFeatures, 200); });
async function searchFeatures() {
  try { features = await api(`/api/features?q=${encodeURIComponent($("#feature-query").value)}`); }
  catch (e) { $("#feature-view").textContent = e.message; return; }
  renderFeatures(features);
}
function renderFeatures(list) {
  $("#features-table tbody").replaceChildren(...list.map((f) => {
    const tr = el("tr", { onclick: () => openFeature(f) }, el("td", { text: `${f.feature}` }),
      el("td", { text: JSON.stringify(f.top_token) }), el("td", { text: f.explanation || "" }),
      el("td", { class: "num", text: fmt(f.score) }), el("td", { class: "num", text: fmt(f.density) }));
    tr.title = `${f.model} ${f.site} (run ${f.run})`;
    return tr;
  }));
}
makeSortable($("#features-table"), () => features, renderFeatures);

function context(ex, scale) {
  return el("div", { class: "ctx" }, ...ex.tokens.map((t, i) => {
    const s = el("span", { text: t, "data-h": `${JSON.stringify(t)} ${fmt(ex.values[i])}` });
    const a = Math.max(0, Math.min(1, ex.values[i] / (scale || 1)));
    if (a > 0) s.style.background = `rgba(234, 88, 12, ${a.toFixed(3)})`;
    return s;
  }));
}

async function openFeature(f) {
  const root = $("#feature-view");
  try {
    const p = await api(`/api/feature?run=${encodeURIComponent(f.run)}&feature=${f.feature}`);
    const h = p.histogram, w = 420, hh = 100, maxH = Math.max(...h.heights, 1);
    const svg = `<svg width="${w}" height="${hh}">` + h.heights.map((v, i) =>
      `<rect x="${(i * w) / h.heights.length}" y="${hh - (v / maxH) * hh}" width="${w / h.heights.length - 1}" height="${(v / maxH) * hh}" fill="#ea580c"><title>${h.edges[i].toFixed(3)}: ${v}</title></rect>`).join("") + "</svg>";
    const hist = el("div"); hist.innerHTML = svg;
    const logits = (rows, label) => dataTable({ title: label, columns: ["token", "effect"], rows });
    root.replaceChildren(el("h2", { text: `Feature ${p.feature} — ${p.site}, ${p.model}` }),
      el("p", {}, el("b", { text: "explanation: " }), p.explanation || "none yet (run lmscope autointerp)",
        p.score !== null && p.score !== undefined ? ` (score ${fmt(p.score)})` : ""),
      el("p", { class: "meta", text: `fires on ${(100 * p.density).toFixed(3)}% of tokens; max ${fmt(p.max)}` }),
      el("h3", { text: "top-activating contexts" }), ...p.top.map((e) => context(e, p.max)),
      el("h3", { text: "activation histogram" }), hist,
      logits(p.logits.positive, "raises"), logits(p.logits.negative, "lowers"),
      ...p.quantiles.flatMap((q) => [el("h3", { text: `activations ${fmt(q.bin_min)} – ${fmt(q.bin_max)}` }),
        ...q.examples.map((e) => context(e, p.max))]));
  } catch (e) { root.replaceChildren(el("p", { class: "error", text: e.message })); }
}

// ---------- model and queue ----------
async function loadModel() {
  try {
    const m = await api("/api/model");
    $("#model").textContent = `${m.name} · ${m.family} · ${m.layers} layers`;
    $("#edited").hidden = !m.edited.length;
    $("#edited").textContent = m.edited.length ? `edited: ${m.edited.join("; ")}` : "";
  } catch (e) { $("#model").textContent = e.message; }
}
async function pollQueue() {
  try {
    const jobs = await api("/api/jobs");
    const running = jobs.find((j) => j.state === "running"), waiting = jobs.filter((j) => j.state === "queued").length;
    $("#queue").textContent = running ? `running ${running.task} (${running.id})${waiting ? ` · ${waiting} waiting` : ""}` :
      waiting ? `${waiting} waiting` : "idle";
  } catch (e) { $("#queue").textContent = "server unreachable"; }
  setTimeout(pollQueue, 1500);
}

loadModel(); loadTasks(); loadRuns(); pollQueue();
