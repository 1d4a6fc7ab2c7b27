// lmscope workbench: plain DOM, no framework, no build step. Views arrive as JSON blocks (heatmap, table, kv).
// The address bar holds where you are (#run=ID, #try=TASK, #job=ID, #features=QUERY, #feature=RUN|N): bookmarks,
// reloads and the back button all work, and a reload finds the running job again.
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

// every write is JSON (the server refuses any other Content-Type, so no form of another site can pass as us)
async function api(path, opts = {}) {
  const method = (opts.method || "GET").toUpperCase();
  const headers = method === "GET" ? {} : { "content-type": "application/json" };
  const res = await fetch(path, { ...opts, headers: { ...headers, ...(opts.headers || {}) }, credentials: "same-origin" });
  const body = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
  if (res.status === 401) $("#signed-out").hidden = false;
  if (!res.ok) throw new Error(body.error || `${res.status}`);
  return body;
}

const fmt = (v) => typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) :
  v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v);
const fileLink = (runId, name) => `/api/file?run=${encodeURIComponent(runId)}&name=${encodeURIComponent(name)}`;
const minutes = (s) => s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(s < 600 ? 1 : 0)} min`;

// ---------- where we are: the hash ----------
function route() {
  const h = decodeURIComponent(location.hash.slice(1));
  const [key, ...rest] = h.split("=");
  const value = rest.join("=");
  if (key === "run" && value) { showTab("runs", false); openRun(value); }
  else if (key === "try") { showTab("try", false); if (value && tasks.length) chooseTask(value); }
  else if (key === "job" && value) { showTab("try", false); attach(value); }
  else if (key === "features") { showTab("features", false); $("#feature-query").value = value; searchFeatures(); }
  else if (key === "feature" && value) { showTab("features", false); const [run, n] = value.split("|"); openFeature({ run, feature: n }); }
  else showTab("runs");
}
const go = (hash) => { if (location.hash !== `#${hash}`) location.hash = hash; else route(); };
window.addEventListener("hashchange", route);

// ---------- tabs ----------
for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => go(b.dataset.tab));
function showTab(name, load = true) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".pane")) p.hidden = p.id !== `pane-${name}`;
  if (name === "runs" && load) loadRuns();
  if (name === "features" && load) searchFeatures();
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
      render([...getRows()].sort((a, b) => compare(a[k], b[k]) * dir));
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

// the colour scale of one heat map: a gradient from vmin to vmax, labelled at both ends and the middle
function legend(b, lo, hi) {
  const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => {
    const v = b.diverging ? -Math.max(Math.abs(lo), Math.abs(hi)) * (1 - 2 * t) : lo + (hi - lo) * t;
    return colour(v, lo, hi, b.diverging, b.palette);
  });
  const bar = el("span", { class: "legend-bar" });
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const m = Math.max(Math.abs(lo), Math.abs(hi));
  const [a, mid, z] = b.diverging ? [-m, 0, m] : [lo, (lo + hi) / 2, hi];
  return el("div", { class: "legend", "data-min": a, "data-max": z },
    el("span", { class: "meta", text: `${b.legend || "value"}: ` }), el("span", { class: "num", text: fmt(a) }), bar,
    el("span", { class: "num", text: `${fmt(z)}` }), el("span", { class: "meta", text: ` (middle ${fmt(mid)})` }));
}

function heatmap(b) {
  const flat = b.values.flat().filter((v) => v !== null);
  const lo = b.vmin ?? Math.min(...flat), hi = b.vmax ?? Math.max(...flat);
  // colour-only maps fit the pane's width (every layer visible); maps with text scroll inside their own box
  const table = el("table", { class: b.text ? "heat text" : "heat fit" });
  const head = el("tr", {}, el("th", { class: "corner", text: `${b.row_axis ?? ""} \\ ${b.col_axis ?? ""}` }));
  b.cols.forEach((c) => head.append(el("th", { text: c, title: c })));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  b.rows.forEach((r, i) => {
    const tr = el("tr", {}, el("th", { text: r }));
    b.values[i].forEach((v, j) => {
      const td = el("td", { "data-r": i, "data-c": j, text: b.text ? b.text[i][j] : "" });
      td.style.background = colour(v, lo, hi, b.diverging, b.palette);
      if (b.text && v !== null && (v - lo) / ((hi - lo) || 1) > 0.6) td.style.color = "#fff";
      td.dataset.h = b.hover ? `${b.hover[i][j]}` : `${r} · ${b.cols[j]}: ${fmt(v)}`;
      td.dataset.v = v ?? "";
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(body);
  return el("div", { class: "block heatmap" }, el("h3", { text: b.title }), legend(b, lo, hi),
    el("div", { class: "heat-box" }, table));
}

function dataTable(b) {
  const rows = b.rows.map((r) => Object.fromEntries(r.map((v, i) => [i, v])));
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

// an attribution graph as SVG: x the position, y the layer (tokens at the bottom, logits on top); hover a node for
// its name, click it to keep only its edges (click the background to see all again)
const SVG = "http://www.w3.org/2000/svg";
const KIND_COLOURS = { feature: "#2ca02c", error: "#7f7f7f", token: "#1f77b4", logit: "#ff7f0e" };
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}
function graphBlock(b) {
  const w = Math.max(640, 90 * b.tokens.length + 120), h = Math.max(360, 16 * (b.layers + 2) + 80);
  const x = (pos) => 70 + (pos + 0.5) * ((w - 100) / b.tokens.length);
  const y = (layer) => h - 50 - (layer + 1) * ((h - 90) / (b.layers + 1));
  const cells = {};
  for (const n of b.nodes) (cells[`${n.layer},${n.pos}`] ||= []).push(n);
  const at = {};
  for (const members of Object.values(cells)) members.forEach((n, k) => {
    const spread = Math.min(60 / Math.max(1, members.length), 10);
    at[n.id] = [x(n.pos) + (k - (members.length - 1) / 2) * spread, y(n.layer)];
  });
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: "100%", class: "graph", role: "img" });
  const top = Math.max(...b.edges.map((e) => Math.abs(e.w)), 1e-9);
  const lines = b.edges.filter((e) => at[e.s] && at[e.t]).map((e) => {
    const line = svg("line", { x1: at[e.s][0], y1: at[e.s][1], x2: at[e.t][0], y2: at[e.t][1],
      stroke: e.w < 0 ? "#d62728" : "#1f77b4", "stroke-width": 0.4 + 2.5 * Math.abs(e.w) / top,
      "stroke-opacity": 0.15 + 0.6 * Math.abs(e.w) / top });
    line.dataset.s = e.s; line.dataset.t = e.t;
    root.append(line);
    return line;
  });
  b.tokens.forEach((t, i) => {
    const label = svg("text", { x: x(i), y: h - 12, "text-anchor": "middle", "font-size": 11 });
    label.textContent = t; root.append(label);
  });
  for (const n of b.nodes) {
    const c = svg("circle", { cx: at[n.id][0], cy: at[n.id][1], r: 5, fill: KIND_COLOURS[n.kind] || "#000",
      stroke: "#fff", "stroke-width": 1, tabindex: 0 });
    const tip = svg("title");
    tip.textContent = nodeText(n);
    c.append(tip);
    c.addEventListener("click", (ev) => {
      ev.stopPropagation();
      for (const l of lines) l.style.display = (+l.dataset.s === n.id || +l.dataset.t === n.id) ? "" : "none";
      showNode(b, n, panel);
    });
    root.append(c);
  }
  const panel = el("div", { class: "node-panel" });
  root.addEventListener("click", () => { for (const l of lines) l.style.display = ""; panel.replaceChildren(); });
  const keyLine = el("p", { class: "meta", text: "green: features · grey: error nodes · blue: tokens · orange: logits; " +
    "blue edges excite, red inhibit; hover a node for its name (a feature: its explanation and top contexts where " +
    "known), click it to see its edges alone and to clamp it" });
  return el("div", { class: "block graph" }, el("h3", { text: b.title }), keyLine, root, panel);
}
function nodeText(n) {
  const act = n.activation !== null && n.activation !== undefined ? ` · activation ${fmt(n.activation)}` : "";
  const note = n.note ? `\n${n.note.explanation ? `explanation: ${n.note.explanation}\n` : ""}` +
    n.note.contexts.map((c) => `… ${c}`).join("\n") : "";
  return `${n.label} · ${n.kind} · cumulative influence ${fmt(n.influence)}${act}${note}`;
}

// a clicked node: its details; a feature can be clamped (scale x its activation) and the prompt rerun on the model
function showNode(b, n, panel) {
  panel.replaceChildren(el("h4", { text: n.label }), el("pre", { class: "gen", text: nodeText(n) }));
  if (n.kind !== "feature") return;
  if (!tasks.some((t) => t.name === "clamp")) {
    panel.append(el("p", { class: "meta", text: "to clamp features, serve transcoders: lmscope serve --transcoders FOLDER" }));
    return;
  }
  const scale = el("input", { type: "number", step: "any", value: "0", min: "-100", max: "100", class: "scale" });
  const out = el("div", { class: "clamp-result" });
  const button = el("button", { type: "button", text: "clamp and rerun" });
  button.addEventListener("click", async () => {
    button.disabled = true; out.replaceChildren(el("p", { class: "meta", text: "running…" }));
    try {
      const params = { prompt: b.prompt, features: [[n.layer, n.pos, n.feature]], scale: parseFloat(scale.value || "0"),
        graph_transcoders: b.transcoders || undefined };
      const job = await api("/api/jobs", { method: "POST", body: JSON.stringify({ task: "clamp", params }) });
      out.replaceChildren(clampTable(await jobPayload(job.id)));
    } catch (e) { out.replaceChildren(el("p", { class: "error", text: e.message })); }
    button.disabled = false;
  });
  panel.append(el("label", {}, "new activation = scale × old ", scale), " ", button, out);
}
async function jobPayload(id) {
  for (;;) {
    const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
    const result = job.events.find((e) => e.type === "result");
    if (result) return result.payload;
    const end = job.events.find((e) => ["failed", "cancelled"].includes(e.type));
    if (end) throw new Error(`${end.type}: ${end.message}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}
function clampTable(p) {
  const f = p.features.map((x) => `${x.node}: ${fmt(x.activation)} → ${fmt(x.set_to)}`).join("; ");
  return el("div", {}, el("p", { class: "meta", text: f }), ...(p.note ? [el("p", { class: "meta", text: p.note })] : []),
    dataTable({ title: "next token: logit (demeaned) before and after", columns: ["token", "before", "after", "change"],
      rows: p.logits.map((r) => [JSON.stringify(r.token), r.before, r.after, r.change]) }),
    dataTable({ title: "top next tokens", columns: ["before", "p", "after", "p "],
      rows: p.before.map((x, i) => [JSON.stringify(x[0]), x[1], JSON.stringify(p.after[i][0]), p.after[i][1]]) }));
}

function kv(b) {
  return el("div", { class: "block" }, el("h3", { text: b.title }),
    el("div", { class: "kv" }, ...Object.entries(b.items).map(([k, v]) => el("span", {}, el("b", { text: `${k}: ` }), fmt(v)))));
}

// a view, then (for a saved run) its command, links to its HTML / JSON files and its PNG figures
function renderView(v, root, run = null) {
  root.replaceChildren(el("h2", { text: v.title }));
  if (run?.command) root.append(el("p", { class: "meta" }, el("code", { text: run.command })));
  root.append(el("div", { class: "kv key" }, ...Object.entries(v.key || {}).map(([k, x]) =>
    el("span", {}, el("b", { text: `${k}: ` }), fmt(x)))));
  for (const n of v.notes || []) root.append(el("p", { class: "meta", text: n }));
  for (const b of v.blocks || []) {
    root.append(b.type === "heatmap" ? heatmap(b) : b.type === "table" ? dataTable(b) : b.type === "graph" ? graphBlock(b) : kv(b));
  }
  if (run) renderFiles(run, root);
}
function renderFiles(run, root) {
  const links = run.files.filter((f) => f.endsWith(".html") || f.endsWith(".json"));
  root.append(el("p", { class: "meta files" }, "run ", el("a", { href: `#run=${run.id}`, text: run.id }),
    links.length ? " · files: " : "", ...links.flatMap((f) => [el("a", { href: fileLink(run.id, f), target: "_blank", rel: "noopener", text: f }), " "])));
  for (const f of run.files.filter((f) => f.endsWith(".png"))) {
    root.append(el("figure", {}, el("img", { src: fileLink(run.id, f), alt: f, loading: "lazy" }), el("figcaption", { class: "meta", text: f })));
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
  const rows = list.filter((r) => !q || `${r.kind} ${r.model} ${r.name} ${r.title} ${r.command} ${r.id}`.toLowerCase().includes(q));
  $("#runs-empty").hidden = list.length > 0;
  $("#runs-table tbody").replaceChildren(...rows.map((r) => el("tr", {
    "data-run": r.id, title: r.command || r.id, class: r.id === selectedRun ? "selected" : "", onclick: () => go(`run=${r.id}`),
  }, el("td", { text: r.date.replace("T", " ").slice(0, 19) }), el("td", { text: r.kind.replace(/Result$/, "") }),
    el("td", {}, el("span", { class: "title", text: r.title || r.name }), el("br"), el("span", { class: "meta", text: r.id })),
    el("td", { text: r.model }))));
}
$("#runs-filter").addEventListener("input", () => renderRuns(runs));
makeSortable($("#runs-table"), () => runs, renderRuns);

let selectedRun = null;
async function openRun(id) {
  selectedRun = id;
  if (!runs.length) await loadRuns(); else renderRuns(runs);
  const root = $("#run-view");
  root.replaceChildren(el("p", { class: "meta", text: "loading…" }));
  try {
    const [v, run] = await Promise.all([api(`/api/view?run=${encodeURIComponent(id)}`), api(`/api/run?run=${encodeURIComponent(id)}`)]);
    if (selectedRun !== id) return;  // another run was chosen meanwhile
    renderView(v, root, run);
    window.lmscopeRendered = performance.now();
  } catch (e) { root.replaceChildren(el("p", { class: "error", text: e.message })); }
}

// ---------- try it ----------
let tasks = [], current = null, source = null;
async function loadTasks() {
  tasks = await api("/api/tasks");
  $("#task").replaceChildren(...tasks.map((t) => el("option", { value: t.name, text: t.name })));
  buildForm();
}
$("#task").addEventListener("change", () => { buildForm(); history.replaceState(null, "", `#try=${$("#task").value}`); });
function chooseTask(name) { if (tasks.some((t) => t.name === name) && $("#task").value !== name) { $("#task").value = name; buildForm(); } }

function buildForm() {
  const t = tasks.find((x) => x.name === $("#task").value);
  $("#task-help").textContent = t.help;
  clearStatus();
  const field = (p) => {
    const id = `p-${p.name}`;
    const numeric = /^(int|float)/.test(p.type) && !p.type.includes("|");
    const input = p.choices ? el("select", { id, name: p.name }, ...p.choices.map((c) => el("option", { value: c, text: c }))) :
      p.type === "bool" ? el("input", { id, name: p.name, type: "checkbox" }) :
      p.name === "prompt" ? el("textarea", { id, name: p.name, placeholder: p.help, rows: "2" }) :  // newlines too
      el("input", { id, name: p.name, placeholder: p.help, ...(numeric ? { type: "number", step: p.type.startsWith("int") ? "1" : "any" } : {}) });
    if (numeric && p.min !== undefined) input.min = p.min;
    if (numeric && p.max !== undefined) input.max = p.max;
    if (p.type === "bool") input.checked = !!p.default;
    else if (p.default !== null && p.default !== undefined) input.value = Array.isArray(p.default) ? p.default.join(",") : p.default;
    input.dataset.type = p.type;
    return el("label", { title: p.help }, `${p.name}${p.required ? " *" : ""} `, input,
      p.limits ? el("span", { class: "meta limits", text: ` ${p.limits}` }) : "");
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
  if (p.type.startsWith("int") || p.type.startsWith("float")) return num(raw);
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

function clearStatus() {
  $("#job-error").hidden = true; $("#job-state").textContent = ""; $("#progress").hidden = true;
  $("#try-result").replaceChildren();
}

$("#try-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = tasks.find((x) => x.name === $("#task").value);
  clearStatus();
  try {
    const job = await api("/api/jobs", { method: "POST", body: JSON.stringify({ task: t.name, params: params(t) }) });
    go(`job=${job.id}`);
  } catch (err) { showError(err.message); }
});

function showError(msg) { const p = $("#job-error"); p.textContent = msg; p.hidden = false; }

// follow a job's events (again after a reload: the server replays them from the first)
async function attach(id) {
  if (current === id && source) return;
  let job;
  try { job = await api(`/api/jobs/${encodeURIComponent(id)}`); } catch (e) { showError(e.message); return; }
  source?.close();
  clearStatus();
  chooseTask(job.task);
  current = job.id;
  $("#job-title").textContent = `${job.task}: ${job.params.prompt ?? ""}`;
  $("#cancel-btn").disabled = ["done", "failed", "cancelled"].includes(job.state);
  $("#progress").hidden = $("#cancel-btn").disabled;
  $("#progress-bar").removeAttribute("value"); $("#progress-text").textContent = job.state;
  source = new EventSource(`/api/jobs/${job.id}/events`);
  source.onmessage = (m) => onEvent(job, JSON.parse(m.data));
  source.onerror = () => { if (source?.readyState === EventSource.CLOSED) $("#job-state").textContent = "connection lost"; };
}

function onEvent(job, ev) {
  if (current !== job.id) return;
  $("#job-state").textContent = `job ${job.id}: ${ev.type}`;
  if (ev.type === "progress") {
    const bar = $("#progress-bar");
    if (ev.total) { bar.max = ev.total; bar.value = ev.n; } else bar.removeAttribute("value");
    const left = ev.total && ev.rate ? ` · about ${minutes((ev.total - ev.n) / ev.rate)} left` : "";
    $("#progress-text").textContent = `${ev.desc} ${ev.total ? `${ev.n}/${ev.total}` : ""}${left}`;
  } else if (ev.type === "started") {
    $("#progress-text").textContent = "running";
  } else if (ev.type === "result") {
    const root = $("#try-result");
    if (ev.view) { renderView(ev.view, root); window.lmscopeRendered = performance.now(); }
    else root.replaceChildren(el("pre", { class: "gen", text: JSON.stringify(ev.payload, null, 2) }));
    loadModel();
  } else if (ev.type === "run") {
    api(`/api/run?run=${encodeURIComponent(ev.run)}`).then((run) => {
      $("#try-result").prepend(el("p", { class: "meta saved", text: `saved as run ${ev.run}` }));
      renderFiles(run, $("#try-result"));
    }).catch(showError);
  } else if (["done", "failed", "cancelled"].includes(ev.type)) {
    source.close(); source = null;
    $("#cancel-btn").disabled = true; $("#progress").hidden = true;
    refreshQueue();
    if (ev.type !== "done") showError(`${ev.type}: ${ev.message}`);
  }
}
$("#cancel-btn").addEventListener("click", () => { if (current) api(`/api/jobs/${current}`, { method: "DELETE" }).catch((e) => showError(e.message)); });

// ---------- features ----------
let features = [], timer = null;
$("#feature-query").addEventListener("input", () => {
  clearTimeout(timer);
  timer = setTimeout(() => history.replaceState(null, "", `#features=${encodeURIComponent($("#feature-query").value)}`) || searchFeatures(), 200);
});
async function searchFeatures() {
  try { features = await api(`/api/features?q=${encodeURIComponent($("#feature-query").value)}`); }
  catch (e) { $("#feature-view").textContent = e.message; return; }
  $("#features-empty").hidden = features.length > 0 || $("#feature-query").value !== "";
  renderFeatures(features);
}
function renderFeatures(list) {
  $("#features-table tbody").replaceChildren(...list.map((f) => {
    const tr = el("tr", { onclick: () => go(`feature=${f.run}|${f.feature}`) }, el("td", { text: `${f.feature}` }),
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

function histogram(h) {
  const w = 420, hh = 100, maxH = Math.max(...h.heights, 1), ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", hh);
  h.heights.forEach((v, i) => {
    const r = document.createElementNS(ns, "rect");
    for (const [k, x] of Object.entries({ x: (i * w) / h.heights.length, y: hh - (v / maxH) * hh,
      width: w / h.heights.length - 1, height: (v / maxH) * hh, fill: "#ea580c" })) r.setAttribute(k, x);
    r.dataset.h = `${h.edges[i].toFixed(3)}: ${v}`;
    svg.append(r);
  });
  return svg;
}

async function openFeature(f) {
  const root = $("#feature-view");
  try {
    const p = await api(`/api/feature?run=${encodeURIComponent(f.run)}&feature=${encodeURIComponent(f.feature)}`);
    const logits = (rows, label) => dataTable({ title: label, columns: ["token", "effect"], rows });
    root.replaceChildren(el("h2", { text: `Feature ${p.feature} — ${p.site}, ${p.model}` }),
      el("p", {}, el("b", { text: "explanation: " }), p.explanation || "none yet (run lmscope autointerp)",
        p.score !== null && p.score !== undefined ? ` (score ${fmt(p.score)})` : ""),
      el("p", { class: "meta", text: `fires on ${(100 * p.density).toFixed(3)}% of tokens; max ${fmt(p.max)}` }),
      el("h3", { text: "top-activating contexts" }), ...p.top.map((e) => context(e, p.max)),
      el("h3", { text: "activation histogram" }), histogram(p.histogram),
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
  await refreshQueue();
  setTimeout(pollQueue, 1500);
}
async function refreshQueue() {
  try {
    const jobs = await api("/api/jobs");
    const running = jobs.find((j) => j.state === "running"), waiting = jobs.filter((j) => j.state === "queued");
    const queue = $("#queue");
    queue.replaceChildren(running ? el("a", { href: `#job=${running.id}`, text: `running ${running.task} (${running.id})` }) :
      waiting.length ? "" : "idle", waiting.length ? ` · ${waiting.length} waiting` : "");
  } catch (e) { $("#queue").textContent = "server unreachable"; }
}

// after a reload with no deep link: go back to the job that is running, if any
async function resume() {
  if (location.hash) return;
  try {
    const jobs = await api("/api/jobs");
    const live = jobs.find((j) => j.state === "running") || jobs.find((j) => j.state === "queued");
    if (live) go(`job=${live.id}`);
  } catch (e) { /* the queue line says the server is unreachable */ }
}

loadModel(); pollQueue();
loadTasks().then(() => { route(); resume(); });
