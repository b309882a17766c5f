// The SEC dashboard: plain JavaScript against the public REST API, no build step.
//
// The API key lives in sessionStorage (this tab only) and goes out as a Bearer header. The
// live feed of a job is the API's server-sent-events stream (`?live=true`: job events plus
// `status` and `trace` events). EventSource cannot send an Authorization header, so the
// stream is read with fetch() and a ReadableStream reader instead; the key never goes into
// a URL. Everything user-supplied is inserted with textContent, never as HTML.
"use strict";

const KEY_STORAGE = "sec.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

async function api(path, { method = "GET", json, body, headers = {}, raw = false } = {}) {
  const h = { Authorization: `Bearer ${apiKey()}`, ...headers };
  if (json !== undefined) { h["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const response = await fetch(path, { method, headers: h, body });
  if (!response.ok) {
    let code = `http_${response.status}`, message = response.statusText;
    try {
      const err = (await response.json()).error || {};
      code = err.code || code; message = err.message || message;
    } catch (_) { /* not JSON */ }
    if (response.status === 401) { signOut(message); }
    throw new ApiError(response.status, code, message);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Server-sent events over fetch: parse `event:`, `data:`, `id:` blocks separated by a blank line.
async function readSSE(response, onMessage) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const msg = { event: "message", data: "", id: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") msg.data += (msg.data ? "\n" : "") + val;
        else if (field === "event") msg.event = val;
        else if (field === "id") msg.id = val;
      }
      if (msg.data) onMessage(msg.event, JSON.parse(msg.data), msg.id);
    }
  }
}

// -------------------------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(digits);
  return String(value);
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }

function setBadge(node, status) {
  node.textContent = status;
  node.className = `badge ${status}`;
}

// ---------------------------------------------------------------------------------- views

let current = { stop: () => {} };

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === view);
}

async function route() {
  current.stop();
  current = { stop: () => {} };
  if (!apiKey()) { show("login"); return; }
  $("nav").hidden = false; $("who").hidden = false;
  const hash = location.hash || "#/jobs";
  const job = hash.match(/^#\/jobs\/([\w-]+)$/);
  try {
    if (job) { show("job"); current = await jobView(job[1]); }
    else if (hash === "#/new") { show("new"); await newJobView(); }
    else { show("jobs"); current = jobsView(); }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return; // back at the sign-in form
    if (job) { $("job-title").textContent = job[1]; $("job-error").textContent = err.message; }
    else console.error(err);
  }
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  $("nav").hidden = true; $("who").hidden = true;
  $("login-error").textContent = message;
  current.stop();
  show("login");
}

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    const me = await api("/v1/me");
    $("tenant-name").textContent = me.name;
    $("api-key").value = "";
    $("login-error").textContent = "";
    if (!location.hash || location.hash === "#/login") location.hash = "#/jobs"; else route();
  } catch (err) {
    sessionStorage.removeItem(KEY_STORAGE);
    $("login-error").textContent = err.message;
  }
}

// Job list: refreshed every few seconds while it is on screen.
function jobsView() {
  let timer = null;
  const tbody = $("jobs-table").querySelector("tbody");
  async function refresh() {
    const page = await api("/v1/jobs?limit=50");
    tbody.replaceChildren(...page.data.map((job) => {
      const bar = el("div", { class: "mini-progress" }, el("div", { style: `width:${Math.round(job.progress * 100)}%` }));
      const row = el("tr", { class: "clickable", "data-job": job.id },
        el("td", {}, el("a", { href: `#/jobs/${job.id}`, class: "mono", text: job.id })),
        el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
        el("td", { text: job.phase || "" }),
        el("td", {}, bar, el("span", { class: "small muted", text: ` ${Math.round(job.progress * 100)}%` })),
        el("td", { text: job.base_model }),
        el("td", { class: "small muted", text: when(job.created_at) }));
      row.addEventListener("click", () => { location.hash = `#/jobs/${job.id}`; });
      return row;
    }));
    $("jobs-empty").hidden = page.data.length > 0;
  }
  const loop = async () => {
    try { await refresh(); } catch (err) { if (err.status === 401) return; }
    timer = setTimeout(loop, 3000);
  };
  loop();
  return { stop: () => clearTimeout(timer) };
}

// --------------------------------------------------------------------------- job: charts

function makeChart(container, series, scales, axes) {
  const width = () => Math.max(container.clientWidth, 320);
  const data = [[], ...series.map(() => [])];
  const plot = new uPlot({
    width: width(), height: 280,
    scales: { x: { time: false }, ...scales },
    series: [{ label: "step" }, ...series],
    axes: [{ label: "step" }, ...axes],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  }, data, container);
  const resize = () => plot.setSize({ width: width(), height: 280 });
  window.addEventListener("resize", resize);
  return {
    push(x, values) {
      data[0].push(x);
      values.forEach((v, i) => data[i + 1].push(v ?? null));
      plot.setData(data);
      container.dataset.points = String(data[0].length);
    },
    destroy() { window.removeEventListener("resize", resize); plot.destroy(); },
  };
}

function jobCharts() {
  const line = (label, stroke, scale, dash) => ({ label, stroke, width: 2, scale, spanGaps: true, points: { size: 5 }, dash, value: (u, v) => fmt(v, 3) });
  const lambda = makeChart($("chart-lambda"),
    [line("λ1 (data)", "#6366f1", "lambda"), line("λ2 (model)", "#f97316", "lambda")],
    { lambda: { auto: true, range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    [{ scale: "lambda", label: "λ" }]);
  const model = makeChart($("chart-model"),
    [line("val accuracy", "#12b76a", "frac"), line("sparsity", "#0ea5e9", "frac", [6, 4]), line("size MB", "#e5484d", "mb")],
    { frac: { auto: false, range: [0, 1] }, mb: { auto: true, range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    [{ scale: "frac", label: "accuracy · sparsity" }, { scale: "mb", side: 1, label: "MB", grid: { show: false } }]);
  return {
    add(row) {
      lambda.push(row.step, [row.lambda1, row.lambda2]);
      model.push(row.step, [row.val_accuracy, row.sparsity, row.size_mb]);
    },
    destroy() { lambda.destroy(); model.destroy(); },
  };
}

// ----------------------------------------------------------------------------- job view

const METRIC_ROWS = [
  ["Accuracy", "accuracy"], ["Macro-F1", "macro_f1"], ["Perplexity", "perplexity"],
  ["Size (MB)", "size_mb"], ["Latency (ms/batch)", "latency_ms_per_batch"],
];

function renderMetrics(job) {
  const tbody = $("metrics-table").querySelector("tbody");
  const teacher = job.metrics?.teacher || {}, compressed = job.metrics?.compressed || {};
  const rows = METRIC_ROWS.filter(([, k]) => k in teacher || k in compressed).map(([label, key]) =>
    el("tr", {}, el("td", { text: label }), el("td", { class: "num", text: fmt(teacher[key]) }),
      el("td", { class: "num", text: fmt(compressed[key]) })));
  for (const [key, value] of Object.entries(job.metrics?.ratios || {})) {
    rows.push(el("tr", {}, el("td", { text: `Ratio: ${key.replaceAll("_", " ")}` }), el("td"), el("td", { class: "num", text: fmt(value) })));
  }
  for (const [key, met] of Object.entries(job.targets_met || {})) {
    rows.push(el("tr", {}, el("td", { text: `Target ${key.replaceAll("_", " ")}` }), el("td"),
      el("td", { class: "num" }, el("span", { class: `badge ${met ? "succeeded" : "failed"}`, text: met ? "met" : "missed" }))));
  }
  tbody.replaceChildren(...rows);
  $("metrics-empty").hidden = rows.length > 0;
}

function renderState(state) {
  setBadge($("job-status"), state.status);
  $("job-phase").textContent = state.status === "running" && state.phase ? `phase: ${state.phase}` : "";
  $("job-progress").style.width = `${Math.round((state.progress || 0) * 100)}%`;
  $("job-cancel").hidden = TERMINAL.has(state.status) || state.status === "cancel_requested";
}

function addEvent(event) {
  const list = $("events");
  const time = el("time", { text: new Date(event.created_at).toLocaleTimeString() });
  list.append(el("li", {}, time, el("span", { class: "kind", text: event.kind }), el("span", { text: event.message })));
  list.scrollTop = list.scrollHeight;
}

async function jobView(jobId) {
  $("job-title").textContent = jobId;
  for (const id of ["events", "predictions"]) $(id).replaceChildren();
  for (const id of ["job-error", "download-status", "predict-error", "latest-metrics"]) $(id).textContent = "";
  $("trace-count").textContent = "0 controller steps";
  $("try-it").hidden = true;
  $("download").disabled = true; $("deploy").disabled = true;
  $("metrics-table").querySelector("tbody").replaceChildren();
  $("metrics-empty").hidden = false;
  $("artifact-info").textContent = "The compressed model appears here once the job succeeds.";

  const job = await api(`/v1/jobs/${jobId}`);
  renderState(job);
  const charts = jobCharts();
  const abort = new AbortController();
  let stopped = false, after = 0, traceAfter = -1, steps = 0;

  async function finish() {
    const done = await api(`/v1/jobs/${jobId}`);
    renderState(done);
    renderMetrics(done);
    if (done.error) $("job-error").textContent = `${done.error.code}: ${done.error.message}`;
    if (done.artifact_id) await showArtifact(done.artifact_id);
    else if (done.spec?.dry_run) $("artifact-info").textContent = "A dry run trains nothing and has no artifact: its plan is in the events.";
  }

  function onMessage(kind, data, id) {
    if (kind === "status") renderState(data);
    else if (kind === "trace") {
      charts.add(data);
      traceAfter = data.step;
      steps += 1;
      $("trace-count").textContent = `${steps} controller step${steps === 1 ? "" : "s"}`;
      const parts = [`λ1 ${fmt(data.lambda1, 3)}`, `λ2 ${fmt(data.lambda2, 3)}`];
      if (data.val_accuracy != null) parts.push(`acc ${fmt(data.val_accuracy, 3)}`);
      $("latest-metrics").textContent = parts.join(" · ");
    } else if (kind === "end") { stopped = true; }
    else { addEvent(data); after = Number(id) || after; }
  }

  // Follow the live stream; reconnect (from the last event and step seen) if it drops.
  (async () => {
    let failures = 0;
    while (!stopped) {
      try {
        const url = `/v1/jobs/${jobId}/events/stream?live=true&after=${after}&trace_after=${traceAfter}`;
        const response = await api(url, { raw: true, headers: { Accept: "text/event-stream" } });
        await readSSE(response, onMessage);
        failures = 0;
      } catch (err) {
        if (abort.signal.aborted || err.status === 401 || err.status === 404) return;
        failures += 1;
        await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** failures, 10000)));
      }
    }
    if (!abort.signal.aborted) await finish();
  })();

  $("job-cancel").onclick = async () => {
    try { renderState(await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" })); }
    catch (err) { $("job-error").textContent = err.message; }
  };
  return { stop: () => { stopped = true; abort.abort(); charts.destroy(); } };
}

async function sha256Hex(buffer) {
  if (!crypto.subtle) return null; // only in secure contexts (https, localhost)
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function showArtifact(artifactId) {
  const artifact = await api(`/v1/artifacts/${artifactId}`);
  $("artifact-info").textContent = `${artifact.id} · ${(artifact.size_bytes / 1e6).toFixed(1)} MB · sha256 ${artifact.sha256.slice(0, 16)}…`;
  $("download").disabled = artifact.status !== "ready";
  $("deploy").disabled = artifact.status !== "ready";
  $("download").onclick = async () => {
    $("download-status").textContent = "downloading…";
    try {
      const response = await api(`/v1/artifacts/${artifactId}/download`, { raw: true });
      const buffer = await response.arrayBuffer();
      const got = await sha256Hex(buffer);
      const announced = response.headers.get("X-Checksum-SHA256");
      if (got && (got !== announced || got !== artifact.sha256)) {
        $("download-status").textContent = `sha256 mismatch: got ${got}, expected ${artifact.sha256}; not saved`;
        return;
      }
      const link = el("a", { href: URL.createObjectURL(new Blob([buffer], { type: "application/gzip" })), download: `${artifactId}.tar.gz` });
      document.body.append(link); link.click(); link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      $("download-status").textContent = got ? `sha256 verified · ${artifactId}.tar.gz` : `saved ${artifactId}.tar.gz`;
    } catch (err) { $("download-status").textContent = err.message; }
  };
  $("deploy").onclick = () => deploy(artifactId);
}

async function deploy(artifactId) {
  $("deploy").disabled = true;
  $("try-it").hidden = false;
  $("deployment-info").textContent = "deploying…";
  try {
    let dep = await api("/v1/deployments", { method: "POST", json: { artifact_id: artifactId }, headers: { "Idempotency-Key": newIdempotencyKey() } });
    while (dep.status === "pending") {
      await new Promise((r) => setTimeout(r, 500));
      dep = await api(`/v1/deployments/${dep.id}`);
    }
    if (dep.status !== "ready") throw new Error(`deployment ${dep.status}: ${dep.error_message || ""}`);
    $("deployment-info").textContent = `deployment ${dep.id} is ready`;
    $("predict").onclick = () => predict(dep.id);
  } catch (err) {
    $("deployment-info").textContent = "";
    $("predict-error").textContent = err.message;
    $("deploy").disabled = false;
  }
}

async function predict(deploymentId) {
  const inputs = $("predict-input").value.split("\n").map((s) => s.trim()).filter(Boolean);
  $("predict-error").textContent = "";
  try {
    const result = await api(`/v1/deployments/${deploymentId}/predict`, { method: "POST", json: { inputs } });
    $("predictions").replaceChildren(...result.predictions.map((p, i) => {
      const prob = p.probabilities[p.label] ?? 0;
      return el("li", {}, el("span", { class: "label", text: p.label }),
        el("span", { class: "prob", style: `width:${Math.round(prob * 80)}px` }),
        el("span", { class: "small muted", text: `${(prob * 100).toFixed(1)}% · ${inputs[i]}` }));
    }));
  } catch (err) { $("predict-error").textContent = err.message; }
}

// ------------------------------------------------------------------------------ new job

async function newJobView() {
  $("job-form-error").textContent = ""; $("job-form-status").textContent = "";
  const [models, datasets] = await Promise.all([api("/v1/models"), api("/v1/datasets?limit=100")]);
  $("base-model").replaceChildren(...models.data.map((m) =>
    el("option", { value: m.id, text: `${m.name}${m.kind === "uploaded" ? ` (${m.id})` : ""} · ${m.architecture}${m.available ? "" : " · not installed"}` })));
  $("dataset-select").replaceChildren(el("option", { value: "", text: "(upload a file above)" }),
    ...datasets.data.map((d) => el("option", { value: d.id, text: `${d.name} · ${d.rows} rows · ${d.id}` })));
}

async function uploadDataset(file, purpose) {
  const form = new FormData();
  form.append("file", file);
  form.append("purpose", purpose);
  return api("/v1/datasets", { method: "POST", body: form });
}

function numberField(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

function deepMerge(base, extra) {
  for (const [k, v] of Object.entries(extra)) {
    if (v && typeof v === "object" && !Array.isArray(v) && base[k] && typeof base[k] === "object") deepMerge(base[k], v);
    else base[k] = v;
  }
  return base;
}

function prune(obj) {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) delete obj[k];
    else if (v && typeof v === "object" && !Array.isArray(v)) { prune(v); if (!Object.keys(v).length) delete obj[k]; }
  }
  return obj;
}

async function submitJob(event) {
  event.preventDefault();
  const error = $("job-form-error"), status = $("job-form-status");
  error.textContent = "";
  let extra = {};
  try { extra = $("spec-extra").value.trim() ? JSON.parse($("spec-extra").value) : {}; }
  catch (err) { error.textContent = `advanced spec is not valid JSON: ${err.message}`; return; }
  $("submit-job").disabled = true;
  try {
    let dataset = $("dataset-select").value;
    const file = $("dataset-file").files[0];
    if (file) {
      status.textContent = `uploading ${file.name}…`;
      dataset = (await uploadDataset(file, "labelled")).id;
    }
    if (!dataset) throw new Error("choose a dataset file (or one uploaded before)");
    let pool;
    const poolFile = $("pool-file").files[0];
    if (poolFile) { status.textContent = `uploading ${poolFile.name}…`; pool = (await uploadDataset(poolFile, "unlabelled")).id; }
    const spec = prune(deepMerge({
      base_model: $("base-model").value,
      dataset,
      unlabelled_dataset: pool,
      budget: { max_minutes: numberField("max-minutes"), label_budget: numberField("label-budget") },
      targets: { min_compression: numberField("min-compression"), max_accuracy_drop: numberField("max-drop") },
      techniques: { aip: { target_head_sparsity: numberField("head-sparsity") }, sqd: { student_layers: numberField("student-layers") } },
    }, extra));
    status.textContent = "submitting…";
    const job = await api("/v1/jobs", { method: "POST", json: spec, headers: { "Idempotency-Key": newIdempotencyKey() } });
    status.textContent = "";
    $("job-form").reset();
    location.hash = `#/jobs/${job.id}`;
  } catch (err) {
    status.textContent = "";
    error.textContent = err.message;
  } finally {
    $("submit-job").disabled = false;
  }
}

// --------------------------------------------------------------------------------- start

$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", () => signOut());
$("job-form").addEventListener("submit", submitJob);
window.addEventListener("hashchange", route);
(async () => {
  if (apiKey()) {
    try { $("tenant-name").textContent = (await api("/v1/me")).name; } catch (_) { /* signed out */ }
  }
  route();
})();
