// The triggers console: plain script over the worker's HTTP API (docs/contract.md, section 14).
// Every datum comes from a token-checked API call; the token is kept for this tab only.
"use strict";

const TOKEN_KEY = "triggers.console.token";
const MASK = "**********";
const BANDS = [["critical", 90], ["high", 70], ["medium", 40], ["low", 1]];
const SOURCES = ["streaming", "cdc", "schema_table", "outcome", "scheduled"];
const ACTION_TYPES = [
  ["enroll_journey", "Enroll in a journey"],
  ["fire_recommend", "Fire a recommendation"],
  ["webhook", "Call a webhook"],
  ["update_attribute", "Update customer attributes"],
];
const main = document.getElementById("main");

// -- helpers -------------------------------------------------------------------------------

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function band(priority) {
  for (const [name, low] of BANDS) if (priority >= low) return name;
  return "low";
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.textContent = ""; }, 6000);
}

function pretty(value) { return JSON.stringify(value, null, 2); }

// An ISO time as `2026-12-02 13:29:50` (the API's times are UTC).
function when(iso) { return iso ? String(iso).replace("T", " ").slice(0, 19) : ""; }

function sortedKeys(value) {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortedKeys(value[k])]));
  }
  return value;
}

function hashQuery() {
  const query = location.hash.split("?")[1] || "";
  return new URLSearchParams(query);
}

class SignInNeeded extends Error {}

async function api(method, path, body) {
  const headers = {Accept: "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401) {
    const had = Boolean(token);
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(had ? "Your token was refused (" + ((data && data.error) || "401") + "). Sign in again."
      : "This worker needs an API token.");
    throw new SignInNeeded();
  }
  return {status: response.status, ok: response.ok, data: data || {}};
}

function apiError(result) {
  const data = result.data || {};
  return (data.error || ("HTTP " + result.status)) + (data.errors && !data.error ? ": " + JSON.stringify(data.errors) : "");
}

function setWho() {
  const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  document.getElementById("who").textContent = signedIn ? "Signed in" : "";
  document.getElementById("signout").hidden = !signedIn;
}

// -- routing -------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/signin$/, () => showSignIn("")],
  [/^#\/triggers$/, () => listPage()],
  [/^#\/new$/, () => editorPage(null)],
  [/^#\/edit\/([^?]+)$/, (m) => editorPage(decodeURIComponent(m[1]))],
  [/^#\/history\/([^?]+)$/, (m) => historyPage(decodeURIComponent(m[1]))],
  [/^#\/report\/([^?]+)$/, (m) => reportPage(decodeURIComponent(m[1]))],
  [/^#\/activity$/, () => activityPage()],
];

function route() {
  const hash = location.hash || "#/triggers";
  const path = hash.split("?")[0];
  for (const [pattern, page] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      for (const link of document.querySelectorAll("[data-nav]")) {
        if (link.getAttribute("href") === path) link.setAttribute("aria-current", "page");
        else link.removeAttribute("aria-current");
      }
      setWho();
      Promise.resolve(page(match)).catch((error) => {
        if (!(error instanceof SignInNeeded)) {
          main.innerHTML = `<h1>Something went wrong</h1><p class="error">${esc(error.message)}</p>`;
        }
      });
      return;
    }
  }
  location.hash = "#/triggers";
}

// Each page shown gets a number: a page's loads that finish after another page replaced it
// stop there (`if (stale(view)) return;`) instead of writing into the other page.
let shownPage = 0;

function page(title, html) {
  document.title = title + " · Triggers console";
  main.innerHTML = html;
  return ++shownPage;
}

function stale(view) { return view !== shownPage; }

// -- sign-in -------------------------------------------------------------------------------

function showSignIn(message) {
  if (location.hash !== "#/signin") history.replaceState(null, "", "#/signin");
  setWho();
  page("Sign in", `
    <h1>Sign in</h1>
    <form id="signin-form" class="card narrow">
      <p id="signin-error" class="error" role="alert">${esc(message)}</p>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" required>
      <p class="hint" id="token-hint">The token is kept for this browser tab only and sent as
        <code>Authorization: Bearer</code> on every API call.</p>
      <button type="submit">Sign in</button>
    </form>`);
  const input = document.getElementById("token");
  input.setAttribute("aria-describedby", "token-hint signin-error");
  input.focus();
  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    const error = document.getElementById("signin-error");
    if (!token) { error.textContent = "Enter the API token."; return; }
    const response = await fetch("/triggers", {headers: {Authorization: "Bearer " + token, Accept: "application/json"}});
    if (response.status === 401) {
      let reason = "";
      try { reason = (await response.json()).error; } catch (e) { reason = ""; }
      error.textContent = "The token was refused" + (reason ? ": " + reason : "") + ".";
      input.setAttribute("aria-invalid", "true");
      input.select();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    location.hash = "#/triggers";
  });
}

// -- triggers list -------------------------------------------------------------------------

async function listPage() {
  const view = page("Triggers", `
    <h1>Triggers</h1>
    <div class="filters" role="search" aria-label="Filter triggers">
      <div><label for="f-search">Search</label><input id="f-search" type="search" placeholder="name, id or event type"></div>
      <div><label for="f-band">Band</label><select id="f-band"><option value="">All</option>
        ${BANDS.map(([b]) => `<option value="${b}">${b}</option>`).join("")}</select></div>
      <div><label for="f-source">Source</label><select id="f-source"><option value="">All</option>
        ${SOURCES.map((s) => `<option value="${s}">${s}</option>`).join("")}</select></div>
      <div><label for="f-action">Action type</label><select id="f-action"><option value="">All</option>
        ${ACTION_TYPES.map(([t]) => `<option value="${t}">${t}</option>`).join("")}</select></div>
      <div><label for="f-state">State</label><select id="f-state"><option value="">All</option>
        <option>live</option><option>shadow</option><option>disabled</option><option>rejected</option></select></div>
    </div>
    <p id="list-summary" class="hint" role="status">Loading…</p>
    <div class="table-wrap">
    <table id="trigger-table">
      <caption class="sr-only">Trigger definitions</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Source / type</th><th scope="col">State</th>
        <th scope="col">Priority</th><th scope="col">Action</th><th scope="col">Firings (1 h)</th>
        <th scope="col">Last change (UTC)</th><th scope="col"><span class="sr-only">Links</span></th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p><button type="button" id="show-all" class="secondary" hidden></button></p>`);
  // The definitions first; the firing counts (read from a topic, slower) fill in when they come.
  const counting = api("GET", "/activity/counts").catch(() => null);  // a 401 has shown the sign-in
  const list = await api("GET", "/triggers");
  if (stale(view)) return;
  if (!list.ok) throw new Error(apiError(list));
  const rows = toRows(list.data);
  let counts = null;
  let limit = LIST_PAGE;
  const render = () => renderRows(rows, counts, limit);
  document.getElementById("show-all").addEventListener("click", () => { limit = Infinity; render(); });
  for (const id of ["f-search", "f-band", "f-source", "f-action", "f-state"]) {
    document.getElementById(id).addEventListener("input", render);
  }
  render();
  document.getElementById("trigger-table").dataset.readyMs = performance.now().toFixed(0);
  const answer = await counting;
  if (answer === null || stale(view)) return;
  counts = answer.ok ? answer.data : {counts: {}, complete: false, failed: apiError(answer)};
  for (const row of rows) row.firings = counts.counts[row.id] || 0;
  render();
}

function toRows(data) {
  const rows = (data.triggers || []).map((t) => {
    const state = t.enabled === false ? "disabled" : (t.mode === "shadow" ? "shadow" : "live");
    return {
      id: t.id, name: t.name || "", source: t.source, eventType: t.eventType, state, reason: "",
      priority: t.priority, band: band(t.priority), action: (t.action || {}).type || "",
      firings: null, changedAt: t.changedAt || "", actor: t.actor || "",
      version: t.version, experiment: Boolean(t.experiment),
      text: [t.id, t.name, t.eventType, t.source].join(" ").toLowerCase(),
    };
  });
  for (const [id, errors] of Object.entries(data.rejected || {})) {
    rows.push({id, name: "", source: "", eventType: "", state: "rejected", reason: errors.join("; "),
      priority: null, band: "", action: "", firings: null, changedAt: "", actor: "",
      text: id.toLowerCase()});
  }
  return rows;
}

// Rows put on the page at once; the rest on "Show all" (filters and search cover every row).
const LIST_PAGE = 200;

function renderRows(rows, counts, limit) {
  const started = performance.now();
  const search = document.getElementById("f-search").value.trim().toLowerCase();
  const want = {band: document.getElementById("f-band").value, source: document.getElementById("f-source").value,
    action: document.getElementById("f-action").value, state: document.getElementById("f-state").value};
  const shown = rows.filter((r) => (!search || r.text.includes(search))
    && (!want.band || r.band === want.band) && (!want.source || r.source === want.source)
    && (!want.action || r.action === want.action) && (!want.state || r.state === want.state));
  const html = shown.slice(0, limit).map((r) => {
    const id = encodeURIComponent(r.id);
    const name = r.name ? `<a href="#/edit/${id}">${esc(r.name)}</a><br><span class="id">${esc(r.id)}</span>`
      : `<a href="#/edit/${id}">${esc(r.id)}</a>`;
    const state = `<span class="badge state-${r.state}">${r.state}</span>`
      + (r.reason ? `<br><span class="reason">${esc(r.reason)}</span>` : "");
    const priority = r.priority === null ? "" : `${r.priority} <span class="badge band-${r.band}">${r.band}</span>`;
    const change = r.changedAt ? `${esc(when(r.changedAt))}<br><span class="id">${esc(r.actor)}</span>` : "";
    return `<tr><td>${name}</td><td>${esc(r.source)}${r.eventType ? " / " + esc(r.eventType) : ""}</td><td>${state}</td>`
      + `<td>${priority}</td><td>${esc(r.action)}</td><td class="num">${r.firings === null ? "…" : r.firings}</td><td>${change}</td>`
      + `<td><a href="#/history/${id}">History</a> · <a href="#/activity?trigger=${id}">Activity</a>`
      + (r.experiment ? ` · <a href="#/report/${id}">Report</a>` : "") + `</td></tr>`;
  });
  const table = document.getElementById("trigger-table");
  table.tBodies[0].innerHTML = html.join("");
  const elapsed = performance.now() - started;
  table.dataset.renderMs = elapsed.toFixed(1);
  table.dataset.rows = String(shown.length);
  table.dataset.rendered = String(html.length);
  const more = document.getElementById("show-all");
  more.hidden = html.length >= shown.length;
  more.textContent = `Show all ${shown.length} (${shown.length - html.length} more)`;
  table.dataset.counted = String(counts !== null);
  document.getElementById("list-summary").textContent =
    `${shown.length} of ${rows.length} triggers` + (html.length < shown.length ? `, the first ${html.length} shown` : "")
    + (counts === null ? " · counting firings…" : (counts.failed ? " · firing counts unavailable: " + counts.failed
      : (counts.complete ? "" : " · firing counts may be short")))
    + ` · rendered in ${elapsed.toFixed(0)} ms`;
}

// -- editor --------------------------------------------------------------------------------

function fieldId(field) { return "fld-" + field.replace(/[^A-Za-z0-9]/g, "-"); }

function fieldHtml(field, label, control, hint) {
  const id = fieldId(field);
  const hintId = hint ? id + "-hint" : "";
  return `<div class="field" data-field="${field}">
    <label for="${id}">${label}</label>
    ${control(id, `aria-describedby="${hintId} ${id}-error"`)}
    ${hint ? `<p class="hint" id="${hintId}">${hint}</p>` : ""}
    <p class="field-error" id="${id}-error" data-error-for="${field}"></p>
  </div>`;
}

const text = (type = "text", extra = "") => (id, described) => `<input id="${id}" type="${type}" ${extra} ${described}>`;
const area = (rows = 3) => (id, described) => `<textarea id="${id}" rows="${rows}" spellcheck="false" ${described}></textarea>`;
const select = (options) => (id, described) => `<select id="${id}" ${described}>${options.map(([v, l]) =>
  `<option value="${esc(v)}">${esc(l)}</option>`).join("")}</select>`;

async function editorPage(triggerId) {
  const editing = triggerId !== null;
  const view = page(editing ? "Edit " + triggerId : "New trigger", `
    <h1>${editing ? "Edit trigger <code>" + esc(triggerId) + "</code>" : "New trigger"}</h1>
    ${editing ? `<p><a href="#/history/${encodeURIComponent(triggerId)}">History</a> ·
      <a href="#/activity?trigger=${encodeURIComponent(triggerId)}">Activity</a><span id="report-link"></span></p>` : ""}
    <form id="editor" novalidate>
      <div id="form-errors" class="error-summary" role="alert"></div>
      <fieldset class="card"><legend>Step 1 · Event and conditions</legend>
        <div class="grid">
          ${fieldHtml("id", "Trigger id", text("text", editing ? "readonly" : "required"), "Letters, digits and . _ : - (the key on the definitions topic).")}
          ${fieldHtml("name", "Name", text())}
          ${fieldHtml("source", "Source", select(SOURCES.map((s) => [s, s])))}
          ${fieldHtml("eventType", "Event type", text("text", "required"), "The event's type, or * for any type.")}
        </div>
        ${fieldHtml("filters", "Filters (JSON object: field → value or list of values)", area(2))}
        <div class="field" data-field="conditions">
          <span class="label" id="conditions-label">Conditions (all must hold)</span>
          <div id="conditions" role="group" aria-labelledby="conditions-label"></div>
          <button type="button" id="add-condition" class="secondary">Add a condition</button>
          <p class="field-error" id="fld-conditions-error" data-error-for="conditions"></p>
        </div>
        <details id="timing"><summary>Delay, cancel events, aggregates and schedule</summary>
          ${fieldHtml("delay", "Delay (JSON, e.g. {\"minutes\": 30})", area(1))}
          ${fieldHtml("cancelOn", "Cancel on (JSON list of events that cancel a pending firing)", area(2))}
          ${fieldHtml("aggregates", "Aggregates (JSON object: name → {fn, of, window})", area(2))}
          ${fieldHtml("schedule", "Schedule (scheduled triggers: JSON {\"cron\", \"timezone\"} or \"daily\")", area(1))}
        </details>
      </fieldset>
      <fieldset class="card"><legend>Step 2 · Action type</legend>
        <div class="radios">${ACTION_TYPES.map(([value, label]) => `<label class="radio">
          <input type="radio" name="actionType" value="${value}" id="action-${value}"> ${esc(label)} <code>${value}</code></label>`).join("")}
        </div>
        <p class="field-error" id="fld-action-error" data-error-for="action"></p>
      </fieldset>
      <fieldset class="card"><legend>Step 3 · Action configuration</legend>
        <div data-action="enroll_journey">
          ${fieldHtml("action.journeyId", "Journey", select([["", "Choose a journey"]]))}
          ${fieldHtml("action.deduplication", "Deduplication", select([["skip_if_active", "skip_if_active (default)"],
            ["restart", "restart"], ["allow_multiple", "allow_multiple"], ["skip_if_ever_enrolled", "skip_if_ever_enrolled"]]))}
        </div>
        <div data-action="fire_recommend">
          ${fieldHtml("action.decisionFlowId", "Decision flow", select([["", "Choose a decision flow"]]))}
          ${fieldHtml("action.channel", "Channel", text())}
          ${fieldHtml("action.deliveryUrl", "Delivery URL (optional)", text("url"), "Checked like a webhook's address.")}
        </div>
        <div data-action="webhook">
          ${fieldHtml("action.url", "Webhook URL", text("url"), "The worker checks where the host resolves: private and loopback addresses are refused.")}
          ${fieldHtml("action.payload", "Payload template (JSON, {{ expression }} placeholders; empty: the firing)", area(3))}
          ${fieldHtml("action.headers", "Headers (JSON object)", area(1))}
          ${fieldHtml("action.secret", "Signing secret (optional)", text("password", "autocomplete=\"off\""), "Never shown by the API: enter it again when you edit.")}
        </div>
        <div data-action="update_attribute">
          ${fieldHtml("action.table", "Table", text(), "Default: customers.")}
          ${fieldHtml("action.attributes", "Attributes (JSON object: column → expression)", area(2))}
        </div>
      </fieldset>
      <fieldset class="card"><legend>Rules</legend>
        <div class="grid">
          ${fieldHtml("cooldownMinutes", "Cooldown (minutes)", text("number", "min=\"0\" step=\"any\""))}
          <div class="field" data-field="priority">
            <label for="fld-priority">Priority (1–100)</label>
            <input id="fld-priority" type="number" min="1" max="100" aria-describedby="priority-band fld-priority-error">
            <p class="hint">Band: <output id="priority-band" for="fld-priority"></output></p>
            <p class="field-error" id="fld-priority-error" data-error-for="priority"></p>
          </div>
          ${fieldHtml("limit", "Limit (JSON, e.g. {\"max\": 3, \"window\": {\"days\": 7}})", area(1))}
          ${fieldHtml("mode", "Mode", select([["live", "live"], ["shadow", "shadow (record, do not act)"]]))}
          <div class="field" data-field="enabled"><label class="radio"><input id="fld-enabled" type="checkbox"> Enabled</label>
            <p class="field-error" id="fld-enabled-error" data-error-for="enabled"></p></div>
        </div>
      </fieldset>
      <details class="card" id="json-view"><summary>JSON</summary>
        <label for="json">Definition as JSON (edit, then apply it to the form)</label>
        <textarea id="json" rows="14" spellcheck="false"></textarea>
        <button type="button" id="apply-json" class="secondary">Apply JSON to the form</button>
        <p class="field-error" id="json-error"></p>
      </details>
      <div class="actions"><button type="submit" id="save">Save and publish</button>
        <span id="validity" class="hint" role="status"></span></div>
      <p id="save-status" role="status"></p>
    </form>
    <section class="card" aria-labelledby="try-heading">
      <h2 id="try-heading">Try it</h2>
      <h3>Dry run</h3>
      <label for="sample">Sample event (JSON)</label>
      <textarea id="sample" rows="6" spellcheck="false"></textarea>
      <div class="actions"><button type="button" id="load-sample" class="secondary">Load a recent event of this type</button>
        <button type="button" id="run-test">Run dry run</button></div>
      <div id="test-result" aria-live="polite"></div>
      <h3>Backtest</h3>
      <div class="grid">
        <div class="field"><label for="bt-from">From (UTC)</label><input id="bt-from" type="datetime-local"></div>
        <div class="field"><label for="bt-to">To (UTC)</label><input id="bt-to" type="datetime-local"></div>
        <div class="field"><label for="bt-max">Most events to read</label><input id="bt-max" type="number" min="1" max="1000000" value="100000"></div>
      </div>
      <div class="actions"><button type="button" id="run-backtest">Run backtest</button></div>
      <div id="backtest-result" aria-live="polite"></div>
    </section>`);

  // Until the definition and the option lists are in, the form is shown but disabled: filling
  // it in afterwards would overwrite whatever was typed or chosen meanwhile.
  const form = document.getElementById("editor");
  const held = [...form.elements].filter((control) => !control.disabled);
  held.forEach((control) => { control.disabled = true; });
  form.setAttribute("aria-busy", "true");
  const original = editing ? await loadDefinition(triggerId) : null;
  if (original && original.experiment && !stale(view)) {  // only a trigger with an experiment has a report
    document.getElementById("report-link").innerHTML = ` · <a href="#/report/${encodeURIComponent(triggerId)}">Report</a>`;
  }
  const [journeys, flows] = await Promise.all([api("GET", "/journeys"), api("GET", "/decisionflows")]);
  if (stale(view)) return;
  fillOptions("action.journeyId", (journeys.data.journeys || []), original && (original.action || {}).journeyId);
  fillOptions("action.decisionFlowId", (flows.data.decisionFlows || []), original && (original.action || {}).decisionFlowId);
  const editor = new Editor(original);
  editor.fill(original || {id: "", source: "streaming", eventType: "", conditions: [""], priority: 50,
    cooldownMinutes: 0, enabled: true, action: {type: "webhook"}});
  held.forEach((control) => { control.disabled = false; });
  form.removeAttribute("aria-busy");
  // The last seven days, up to the next whole minute (the inputs have no seconds).
  const to = new Date(Math.ceil((Date.now() + 1) / 60000) * 60000);
  document.getElementById("bt-to").value = to.toISOString().slice(0, 16);
  document.getElementById("bt-from").value = new Date(to.getTime() - 7 * 86400000).toISOString().slice(0, 16);
  if (editing) editor.loadSample();
}

async function loadDefinition(triggerId) {
  const result = await api("GET", "/triggers/" + encodeURIComponent(triggerId));
  if (result.ok) return result.data;
  if (result.status === 404 && result.data.errors) {
    toast("This trigger was rejected: " + result.data.errors.join("; "));
    return {id: triggerId, source: "streaming", eventType: "", conditions: [""], action: {type: "webhook"}};
  }
  throw new Error(apiError(result));
}

function fillOptions(field, items, current) {
  const control = document.getElementById(fieldId(field));
  const ids = new Set(items.map((i) => i.id));
  const all = current && !ids.has(current) ? [...items, {id: current, name: "(not loaded on this worker)"}] : items;
  control.insertAdjacentHTML("beforeend", all.map((i) =>
    `<option value="${esc(i.id)}">${esc(i.id)}${i.name ? " — " + esc(i.name) : ""}</option>`).join(""));
}

class Editor {
  constructor(original) {
    this.original = original;
    this.form = document.getElementById("editor");
    this.errors = [];
    this.pending = null;
    this.sequence = 0;
    this.form.addEventListener("input", (event) => {
      if (event.target.id === "json") return;
      this.changed();
    });
    this.form.addEventListener("change", (event) => { if (event.target.name === "actionType") this.showAction(); });
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.save(); });
    document.getElementById("add-condition").addEventListener("click", () => { this.addCondition(""); this.changed(); });
    document.getElementById("apply-json").addEventListener("click", () => this.applyJson());
    document.getElementById("load-sample").addEventListener("click", () => this.loadSample());
    document.getElementById("run-test").addEventListener("click", () => this.dryRun());
    document.getElementById("run-backtest").addEventListener("click", () => this.backtest());
  }

  control(field) { return document.getElementById(fieldId(field)); }

  fill(definition) {
    const set = (field, value) => { const c = this.control(field); if (c) c.value = value ?? ""; };
    const json = (field, value) => set(field, value === undefined || value === null ? "" : JSON.stringify(value));
    // The form has no fields for an experiment: it is kept as read (and editable in the JSON view)
    // so that saving the trigger does not drop it.
    this.experiment = definition.experiment || undefined;
    set("id", definition.id); set("name", definition.name); set("source", definition.source || "streaming");
    set("eventType", definition.eventType);
    json("filters", definition.filters && Object.keys(definition.filters).length ? definition.filters : undefined);
    json("delay", definition.delay); json("cancelOn", definition.cancelOn); json("aggregates", definition.aggregates);
    json("schedule", definition.schedule); json("limit", definition.limit);
    set("cooldownMinutes", definition.cooldownMinutes ?? 0); set("priority", definition.priority ?? 50);
    set("mode", definition.mode || "live");
    this.control("enabled").checked = definition.enabled !== false;
    document.getElementById("conditions").innerHTML = "";
    const conditions = definition.conditions && definition.conditions.length ? definition.conditions : [""];
    for (const condition of conditions) this.addCondition(condition);
    const action = definition.action || {type: "webhook"};
    const radio = document.getElementById("action-" + action.type);
    if (radio) radio.checked = true;
    set("action.journeyId", action.journeyId || ""); set("action.deduplication", action.deduplication || "skip_if_active");
    set("action.decisionFlowId", action.decisionFlowId || ""); set("action.channel", action.channel);
    set("action.deliveryUrl", action.deliveryUrl); set("action.url", action.url);
    json("action.payload", action.payload);
    json("action.headers", action.headers && Object.keys(action.headers).length ? action.headers : undefined);
    set("action.secret", action.secret && action.secret !== MASK ? action.secret : "");
    set("action.table", action.table); json("action.attributes", action.attributes);
    if (definition.delay || definition.cancelOn || definition.aggregates || definition.schedule) {
      document.getElementById("timing").open = true;
    }
    this.showAction();
    this.changed();
  }

  addCondition(value) {
    const list = document.getElementById("conditions");
    const index = list.children.length;
    const field = `conditions[${index}]`;
    const id = fieldId(field);
    list.insertAdjacentHTML("beforeend", `<div class="condition" data-field="${field}">
      <label for="${id}">Condition ${index + 1}</label>
      <div class="row"><input id="${id}" class="cond" type="text" spellcheck="false" aria-describedby="${id}-error"
        placeholder="event.amount > 1000">
      <button type="button" class="secondary remove" aria-label="Remove condition ${index + 1}">Remove</button></div>
      <p class="field-error" id="${id}-error" data-error-for="${field}"></p></div>`);
    const row = list.lastElementChild;
    row.querySelector("input").value = value;
    row.querySelector(".remove").addEventListener("click", () => {
      const values = [...list.querySelectorAll("input.cond")].map((i) => i.value);
      values.splice(index, 1);
      list.innerHTML = "";
      for (const v of values.length ? values : [""]) this.addCondition(v);
      this.changed();
    });
  }

  actionType() {
    const checked = this.form.querySelector("input[name=actionType]:checked");
    return checked ? checked.value : "";
  }

  showAction() {
    const type = this.actionType();
    for (const section of this.form.querySelectorAll("[data-action]")) section.hidden = section.dataset.action !== type;
  }

  // The definition the form describes, and the problems found before asking the server.
  definition() {
    const local = [];
    const value = (field) => (this.control(field) ? this.control(field).value.trim() : "");
    const json = (field) => {
      const raw = value(field);
      if (!raw) return undefined;
      try { return JSON.parse(raw); } catch (e) { local.push({field, message: "not valid JSON: " + e.message}); return undefined; }
    };
    const number = (field) => {
      const raw = value(field);
      if (raw === "") return undefined;
      const n = Number(raw);
      return Number.isFinite(n) ? n : raw;
    };
    const definition = {id: value("id")};
    if (value("name")) definition.name = value("name");
    definition.enabled = this.control("enabled").checked;
    definition.source = value("source");
    definition.eventType = value("eventType");
    for (const field of ["filters", "delay", "cancelOn", "aggregates", "schedule", "limit"]) {
      const parsed = json(field);
      if (parsed !== undefined) definition[field] = parsed;
    }
    definition.conditions = [...document.querySelectorAll("#conditions input.cond")].map((i) => i.value.trim()).filter((c) => c);
    const type = this.actionType();
    const action = {type};
    const copy = (field, key) => { const v = value(field); if (v) action[key] = v; };
    if (type === "enroll_journey") { copy("action.journeyId", "journeyId"); copy("action.deduplication", "deduplication"); }
    if (type === "fire_recommend") {
      copy("action.decisionFlowId", "decisionFlowId"); copy("action.channel", "channel"); copy("action.deliveryUrl", "deliveryUrl");
      const kept = this.original && this.original.action && this.original.action.maxPerSecond;
      if (kept && action.deliveryUrl) action.maxPerSecond = kept;
    }
    if (type === "webhook") {
      copy("action.url", "url");
      for (const [field, key] of [["action.payload", "payload"], ["action.headers", "headers"]]) {
        const parsed = json(field);
        if (parsed !== undefined) action[key] = parsed;
      }
      copy("action.secret", "secret");
      const before = (this.original && this.original.action) || {};
      if (before.type === "webhook" && before.secret && !action.secret) {
        local.push({field: "action.secret", message: "the API never shows the secret: enter it again to keep it (or clear it from the JSON view)"});
      }
      if (action.headers && Object.values(action.headers).includes(MASK)) {
        local.push({field: "action.headers", message: "header values are not shown by the API: enter each value again"});
      }
      if (before.maxPerSecond) action.maxPerSecond = before.maxPerSecond;
    }
    if (type === "update_attribute") {
      copy("action.table", "table");
      const parsed = json("action.attributes");
      if (parsed !== undefined) action.attributes = parsed;
    }
    if (!type) local.push({field: "action", message: "choose an action type"});
    definition.action = action;
    if (this.experiment) {
      definition.experiment = this.experiment;
      if (JSON.stringify(this.experiment).includes(MASK)) {
        local.push({field: "experiment", message: "a variant's secret or header values are not shown by the API: "
          + "enter them again in the JSON view (or publish the experiment with PUT /triggers/{id})"});
      }
    }
    const cooldown = number("cooldownMinutes");
    if (cooldown !== undefined) definition.cooldownMinutes = cooldown;
    const priority = number("priority");
    if (priority !== undefined) definition.priority = priority;
    if (value("mode") && value("mode") !== "live") definition.mode = value("mode");
    return {definition, local};
  }

  changed() {
    const priority = Number(this.control("priority").value);
    document.getElementById("priority-band").textContent = Number.isFinite(priority) && priority >= 1 ? band(priority) : "—";
    const {definition} = this.definition();
    document.getElementById("json").value = pretty(definition);
    clearTimeout(this.timer);
    document.getElementById("validity").textContent = "Checking…";
    this.timer = setTimeout(() => this.validate(), 250);
  }

  async validate() {
    if (!this.form.isConnected) return this.errors;  // another page replaced the editor before the timer ran
    const sequence = ++this.sequence;
    const {definition, local} = this.definition();
    this.pending = (async () => {
      const result = await api("POST", "/triggers/validate", definition);
      if (sequence !== this.sequence || !this.form.isConnected) return this.errors;  // the form changed or left
      const server = result.ok ? result.data.errors : [{field: "definition", message: apiError(result)}];
      this.show([...local, ...server], result.ok ? result.data.warnings || [] : []);
      return this.errors;
    })();
    return this.pending;
  }

  show(errors, warnings) {
    this.errors = errors;
    for (const box of this.form.querySelectorAll("[data-error-for]")) { box.textContent = ""; box.classList.remove("warning"); }
    for (const control of this.form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    const general = [];
    for (const [list, isWarning] of [[errors, false], [warnings, true]]) {
      for (const error of list) {
        const box = this.errorBox(error.field);
        if (!box) { general.push((isWarning ? "Warning: " : "") + error.field + ": " + error.message); continue; }
        box.textContent = (box.textContent ? box.textContent + " " : "") + (isWarning ? "Warning: " : "") + error.message;
        if (isWarning) { box.classList.add("warning"); continue; }
        const control = box.closest("[data-field]").querySelector("input, select, textarea");
        if (control) control.setAttribute("aria-invalid", "true");
      }
    }
    const summary = document.getElementById("form-errors");
    summary.innerHTML = general.length ? `<ul>${general.map((g) => `<li>${esc(g)}</li>`).join("")}</ul>` : "";
    document.getElementById("validity").textContent = errors.length
      ? `${errors.length} ${errors.length === 1 ? "problem" : "problems"} to fix before saving` : "Valid";
    this.form.dataset.errors = String(errors.length);
  }

  // The error box of the field an error names, or of its nearest named parent
  // (`filters.country` → filters, `action.headers.X-Key` → action.headers).
  errorBox(field) {
    let name = field;
    while (name) {
      const box = this.form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
      if (box && !box.closest("[hidden]")) return box;
      const cut = Math.max(name.lastIndexOf("."), name.lastIndexOf("["));
      name = cut > 0 ? name.slice(0, cut) : "";
    }
    return null;
  }

  async save() {
    const status = document.getElementById("save-status");
    clearTimeout(this.timer);
    const errors = await this.validate();
    if (errors.length) {
      status.className = "error";
      status.textContent = `Not saved: fix the ${errors.length === 1 ? "problem" : errors.length + " problems"} shown first.`;
      const first = this.form.querySelector("[aria-invalid=true]");
      if (first) first.focus();
      return;
    }
    const {definition} = this.definition();
    const result = await api("PUT", "/triggers/" + encodeURIComponent(definition.id), definition);
    if (!result.ok) {
      status.className = "error";
      status.textContent = "Not saved: " + apiError(result);
      if (result.data.errors) this.show(result.data.errors.map((e) => ({field: "definition", message: e})), []);
      return;
    }
    status.className = "ok";
    status.textContent = `Saved: ${definition.id} published (${result.data.status}). Every worker applies it within a second.`;
    this.original = definition;
    if (location.hash !== "#/edit/" + encodeURIComponent(definition.id)) {
      history.replaceState(null, "", "#/edit/" + encodeURIComponent(definition.id));
    }
  }

  applyJson() {
    const box = document.getElementById("json-error");
    try {
      const parsed = JSON.parse(document.getElementById("json").value);
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("a definition is a JSON object");
      box.textContent = "";
      this.fill(parsed);
      toast("JSON applied to the form.");
    } catch (e) {
      box.textContent = "Not applied: " + e.message;
    }
  }

  async loadSample() {
    const {definition} = this.definition();
    const sample = document.getElementById("sample");
    if (definition.source === "scheduled") {
      sample.value = pretty({type: "tick", customerId: "c-1"});
      return;
    }
    const query = new URLSearchParams({source: definition.source || "streaming", type: definition.eventType || "*", limit: "1"});
    const result = await api("GET", "/events/recent?" + query);
    const event = result.ok && result.data.events && result.data.events[0];
    if (event) {
      sample.value = pretty(event);
      toast("Loaded the latest " + event.type + " event, from " + event.timestamp + ".");
    } else {
      sample.value = pretty({type: definition.eventType || "purchase", customerId: "c-1"});
      toast("No recent event of this type: a template was filled in.");
    }
  }

  async dryRun() {
    const out = document.getElementById("test-result");
    let event;
    try { event = JSON.parse(document.getElementById("sample").value); } catch (e) {
      out.innerHTML = `<p class="error">The sample event is not valid JSON: ${esc(e.message)}</p>`; return;
    }
    const {definition} = this.definition();
    if (!definition.id) { out.innerHTML = `<p class="error">Give the trigger an id first.</p>`; return; }
    const result = await api("POST", "/triggers/" + encodeURIComponent(definition.id) + "/test", {event, definition});
    if (!result.ok) { out.innerHTML = `<p class="error">${esc(apiError(result))}</p>`; return; }
    const r = result.data;
    const mark = (passed) => passed ? `<span class="pass">✓ passed</span>` : `<span class="fail">✗ failed</span>`;
    const rows = [
      `<tr><th scope="row">Enabled</th><td></td><td>${mark(r.enabled)}</td></tr>`,
      `<tr><th scope="row">Source and event type</th><td>${esc(r.event.source)} / ${esc(r.event.type)}</td><td>${mark(r.typeMatches)}</td></tr>`,
      ...r.filters.map((f) => `<tr><th scope="row">Filter <code>${esc(f.field)}</code></th>
        <td>expected ${esc(JSON.stringify(f.expected))}, got ${esc(JSON.stringify(f.actual))}</td><td>${mark(f.passed)}</td></tr>`),
      ...r.conditions.map((c) => `<tr><th scope="row">Condition <code>${esc(c.expression)}</code></th>
        <td>${"error" in c ? "error: " + esc(c.error) : "result: " + esc(JSON.stringify(c.result))}</td><td>${mark(c.passed)}</td></tr>`),
    ];
    out.innerHTML = `<p class="verdict ${r.wouldFire ? "pass" : "fail"}" id="would-fire">${r.wouldFire ? "Would fire" : "Would not fire"}</p>
      <table class="checks"><caption class="sr-only">Dry-run checks</caption>
      <thead><tr><th scope="col">Check</th><th scope="col">Detail</th><th scope="col">Result</th></tr></thead>
      <tbody>${rows.join("")}</tbody></table>
      ${r.policies ? `<details><summary>Policies and limits now</summary><pre>${esc(pretty(r.policies))}</pre></details>` : ""}
      <p class="hint">${r.mode ? "Mode: " + esc(r.mode) + (r.performs ? " (" + esc(r.performs) + "). " : ". ") : ""}Cooldown:
        ${esc(r.cooldown)}. Customer row from the ${esc(r.customerFrom)}.</p>`;
  }

  async backtest() {
    const out = document.getElementById("backtest-result");
    const {definition} = this.definition();
    const from = document.getElementById("bt-from").value, to = document.getElementById("bt-to").value;
    const body = {definition, from: from + ":00Z", to: to + ":00Z", maxEvents: Number(document.getElementById("bt-max").value) || 100000};
    out.innerHTML = `<p class="hint">Reading events…</p>`;
    const result = await api("POST", "/triggers/backtest", body);
    if (!result.ok) { out.innerHTML = `<p class="error">${esc(apiError(result))}</p>`; return; }
    const r = result.data;
    const suppressed = Object.entries(r.suppressed || {}).map(([k, v]) => `${esc(k)}: ${v}`).join(", ") || "none";
    out.innerHTML = `<dl class="summary" id="backtest-summary">
        <div><dt>Events read</dt><dd>${r.eventsRead}${r.truncated ? " (stopped at the limit)" : ""}</dd></div>
        <div><dt>Matched</dt><dd>${r.matched}</dd></div>
        <div><dt>Would fire</dt><dd id="bt-would-fire">${r.wouldFire}</dd></div>
        <div><dt>Cooled down</dt><dd>${r.cooledDown}</dd></div>
        <div><dt>Suppressed</dt><dd>${suppressed}</dd></div>
        <div><dt>Still pending</dt><dd>${r.pending ?? 0}</dd></div>
        <div><dt>By band</dt><dd>${Object.entries(r.perBand || {}).map(([k, v]) => `${esc(k)}: ${v}`).join(", ") || "none"}</dd></div>
        <div><dt>Took</dt><dd>${Number(r.seconds || 0).toFixed(2)} s</dd></div></dl>
      ${chart(r.perDay || [])}
      ${(r.samples || []).length ? `<details><summary>Sample firings (${r.samples.length})</summary>
        <pre>${esc(pretty(r.samples))}</pre></details>` : ""}`;
  }
}

// Firings per day as bars, in inline SVG with a text table beside it for screen readers.
function chart(perDay) {
  if (!perDay.length) return `<p class="hint">No firings in this range.</p>`;
  const width = 640, height = 180, pad = 28;
  const most = Math.max(1, ...perDay.map((d) => d.firings));
  const step = (width - pad * 2) / perDay.length;
  const bars = perDay.map((d, i) => {
    const h = Math.round((height - pad * 2) * d.firings / most);
    const x = pad + i * step, y = height - pad - h;
    return `<rect class="bar" x="${x + 2}" y="${y}" width="${Math.max(1, step - 4)}" height="${h}"><title>${esc(d.day)}: ${d.firings}</title></rect>`
      + (perDay.length <= 31 ? `<text class="axis" x="${x + step / 2}" y="${height - pad + 14}" text-anchor="middle">${esc(d.day.slice(5))}</text>` : "");
  }).join("");
  return `<figure class="chart"><svg id="backtest-chart" viewBox="0 0 ${width} ${height}" role="img" aria-labelledby="chart-title">
      <title id="chart-title">Firings per day</title>
      <line class="axis-line" x1="${pad}" y1="${height - pad}" x2="${width - pad}" y2="${height - pad}"></line>
      <text class="axis" x="${pad}" y="${pad - 8}">${most}</text>${bars}</svg>
    <figcaption>Firings per day (most: ${most})</figcaption>
    <details><summary>As a table</summary><table><thead><tr><th scope="col">Day</th><th scope="col">Firings</th></tr></thead>
      <tbody>${perDay.map((d) => `<tr><td>${esc(d.day)}</td><td class="num">${d.firings}</td></tr>`).join("")}</tbody></table></details>
  </figure>`;
}

// -- history -------------------------------------------------------------------------------

async function historyPage(triggerId) {
  const view = page("History of " + triggerId, `<h1>History of <code>${esc(triggerId)}</code></h1>
    <p><a href="#/edit/${encodeURIComponent(triggerId)}">Edit</a></p>
    <div id="history"><p>Loading…</p></div><section id="diff" aria-live="polite"></section>`);
  const result = await api("GET", "/triggers/" + encodeURIComponent(triggerId) + "/history");
  if (stale(view)) return;
  const box = document.getElementById("history");
  if (!result.ok) { box.innerHTML = `<p class="error">${esc(apiError(result))}</p>`; return; }
  const versions = result.data.versions || [];
  if (!versions.length) { box.innerHTML = `<p>No versions recorded.</p>`; return; }
  const latest = versions[versions.length - 1].version;
  box.innerHTML = `<table id="versions"><caption class="sr-only">Versions, newest first</caption>
    <thead><tr><th scope="col">Version</th><th scope="col">At (UTC)</th><th scope="col">By</th><th scope="col">Change</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
    <tbody>${versions.slice().reverse().map((v) => `<tr data-version="${v.version}">
      <td>${v.version}${v.version === latest ? ' <span class="badge state-live">current</span>' : ""}</td>
      <td>${esc(when(v.at))}</td><td>${esc(v.actor)}</td><td>${changeOf(v)}</td>
      <td><button type="button" class="secondary" data-diff="${v.version}">Show diff</button>
      ${v.version !== latest && v.after !== null && !v.errors ? `<button type="button" data-rollback="${v.version}">Roll back to version ${v.version}</button>` : ""}</td></tr>`).join("")}
    </tbody></table>`;
  box.addEventListener("click", async (event) => {
    const diffOf = event.target.dataset.diff, rollTo = event.target.dataset.rollback;
    if (diffOf) showDiff(versions.find((v) => String(v.version) === diffOf));
    if (rollTo) {
      const done = await api("POST", "/triggers/" + encodeURIComponent(triggerId) + "/rollback", {to: Number(rollTo)});
      if (!done.ok) { toast("Rollback refused: " + apiError(done)); return; }
      toast(`Rolled back to version ${done.data.rolledBackTo} (${done.data.status}).`);
      document.getElementById("diff").innerHTML = `<p class="ok" id="rollback-status">Rolled back to version ${esc(done.data.rolledBackTo)}: a new version is being published.</p>`;
      setTimeout(() => { if (location.hash.startsWith("#/history/")) historyPage(triggerId); }, 1500);
    }
  });
  showDiff(versions[versions.length - 1]);
}

function changeOf(version) {
  if (version.errors) return "rejected: " + esc(version.errors.join("; "));
  if (version.after === null) return "deleted";
  return version.before === null ? "created" : "updated";
}

function showDiff(version) {
  const before = version.before ? pretty(sortedKeys(version.before)).split("\n") : [];
  const after = version.after ? pretty(sortedKeys(version.after)).split("\n") : [];
  const rows = lineDiff(before, after).map(([kind, left, right]) => {
    const cls = kind === "same" ? "" : ` class="${kind}"`;
    const l = left === null ? "" : (kind === "same" ? "  " : "− ") + left;
    const r = right === null ? "" : (kind === "same" ? "  " : "+ ") + right;
    return `<tr${cls}><td><pre>${esc(l)}</pre></td><td><pre>${esc(r)}</pre></td></tr>`;
  }).join("");
  document.getElementById("diff").innerHTML = `<h2>Version ${version.version}: ${esc(when(version.at))} UTC by ${esc(version.actor)}</h2>
    <table class="diff" id="diff-table"><caption class="sr-only">Side-by-side diff</caption>
    <thead><tr><th scope="col">Before</th><th scope="col">After</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// A line diff by longest common subsequence, as [kind, left, right] rows side by side.
function lineDiff(a, b) {
  const n = a.length, m = b.length;
  const lcs = Array.from({length: n + 1}, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const rows = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { rows.push(["same", a[i++], b[j++]]); }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { rows.push(["added", null, b[j++]]); }
    else { rows.push(["removed", a[i++], null]); }
  }
  return paired(rows);
}

// Removed lines followed by added ones become changed lines, side by side on one row each.
function paired(rows) {
  const out = [];
  for (let k = 0; k < rows.length;) {
    if (rows[k][0] !== "removed") { out.push(rows[k++]); continue; }
    const removed = [], added = [];
    while (k < rows.length && rows[k][0] === "removed") removed.push(rows[k++][1]);
    while (k < rows.length && rows[k][0] === "added") added.push(rows[k++][2]);
    for (let n = 0; n < Math.max(removed.length, added.length); n++) {
      const left = n < removed.length ? removed[n] : null, right = n < added.length ? added[n] : null;
      out.push([left !== null && right !== null ? "changed" : (left !== null ? "removed" : "added"), left, right]);
    }
  }
  return out;
}

// -- experiment report ---------------------------------------------------------------------

async function reportPage(triggerId) {
  const since = hashQuery().get("since") || "";
  const id = encodeURIComponent(triggerId);
  const view = page("Report of " + triggerId, `<h1>Experiment report of <code>${esc(triggerId)}</code></h1>
    <p><a href="#/edit/${id}">Edit</a> · <a href="#/history/${id}">History</a> · <a href="#/activity?trigger=${id}">Activity</a></p>
    <form id="report-form" class="filters" aria-label="Report range">
      <div><label for="r-since">Since</label><input id="r-since" type="text" value="${esc(since)}"
        placeholder="7d, 2h or 2026-12-01T00:00:00Z" aria-describedby="r-since-hint"></div>
      <div class="end"><button type="submit">Show report</button></div>
    </form>
    <p class="hint" id="r-since-hint">A duration back from now (<code>30m</code>, <code>2h</code>, <code>7d</code>) or an
      ISO time with its zone; empty: every firing on the topics.</p>
    <div id="report" aria-live="polite"><p>Reading the experiment topics…</p></div>`);
  document.getElementById("report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("r-since").value.trim();
    const target = `#/report/${id}` + (value ? "?" + new URLSearchParams({since: value}) : "");
    if (location.hash === target) route();  // the same range: read again
    else location.hash = target;
  });
  const definition = await api("GET", "/triggers/" + id);
  if (stale(view)) return;
  const box = document.getElementById("report");
  if (definition.ok && !definition.data.experiment) {
    box.innerHTML = `<p id="report-none">This trigger has no experiment: it has no report.</p>`;
    return;
  }
  const result = await api("GET", `/triggers/${id}/report` + (since ? "?" + new URLSearchParams({since}) : ""));
  if (stale(view)) return;
  if (!result.ok) {
    box.innerHTML = `<p class="error" role="alert" id="report-error">${esc(apiError(result))}</p>`;
    if (result.status === 400) document.getElementById("r-since").setAttribute("aria-invalid", "true");
    return;
  }
  const report = result.data;
  if (!report.groups.length) { box.innerHTML = `<p id="report-empty">${esc(report.message || "No firings.")}</p>`; return; }
  box.innerHTML = reportChart(report.groups) + reportTable(report);
}

const percent = (rate) => (rate === null || rate === undefined ? "—" : (100 * rate).toFixed(1) + "%");
const signed = (value, unit) => (value === null || value === undefined ? "unbounded"
  : (value >= 0 ? "+" : "") + (100 * value).toFixed(1) + unit);
const points = (difference) => signed(difference, " pp");
const relativeLift = (ratio) => signed(ratio, "%");

// The table is the report itself (and the chart's text alternative): every number the chart draws.
function reportTable(report) {
  const interval = (ci, show) => (ci ? `${show(ci[0])} to ${show(ci[1])}` : "");
  const rows = report.groups.map((g) => {
    const lift = g.lift;
    return `<tr data-group="${esc(g.group)}"><th scope="row">${esc(g.group)}</th><td class="num">${g.firings}</td>
      <td class="num">${g.conversions}</td><td class="num">${percent(g.conversionRate)}</td>
      <td class="num">${lift ? points(lift.difference) : (g.group === "holdout" ? "baseline" : "no holdout")}</td>
      <td class="num">${lift ? interval(lift.differenceCi95, points) : ""}</td>
      <td class="num">${lift ? (lift.relative === null ? "—" : relativeLift(lift.relative)) : ""}</td>
      <td class="num">${lift ? interval(lift.relativeCi95, relativeLift) : ""}</td></tr>`;
  }).join("");
  const i = report.interval || {};
  return `<div class="table-wrap"><table id="report-table"><caption>Conversions per group${report.since ? " since " + esc(when(report.since)) + " UTC" : ""}</caption>
    <thead><tr><th scope="col">Group</th><th scope="col">Firings</th><th scope="col">Conversions</th><th scope="col">Conversion rate</th>
      <th scope="col">Lift vs holdout</th><th scope="col">Lift 95% interval</th><th scope="col">Relative lift</th><th scope="col">Relative 95% interval</th></tr></thead>
    <tbody>${rows}</tbody></table></div>
    <p class="hint" id="report-method">Lift: the group's rate minus the holdout's, in percentage points (pp), and relative to the holdout's rate.
      Intervals: ${esc(i.level ? i.level * 100 + "%" : "95%")}, ${esc(i.library || "")} <code>${esc(i.function || "")}</code>
      (difference: ${esc(i.difference || "")}, ratio: ${esc(i.relative || "")}). An interval that crosses zero does not show a lift.</p>`;
}

// Conversion rate per group as bars; below, each group's lift over the holdout as a point with its
// 95% interval as a whisker against a zero line. Inline SVG; the table after it holds the same numbers.
function reportChart(groups) {
  const width = 640, pad = 40, barsHeight = 200, rowHeight = 30;
  const lifted = groups.filter((g) => g.lift);
  const height = barsHeight + (lifted.length ? 40 + rowHeight * lifted.length + 24 : 0);
  const most = Math.max(0.01, ...groups.map((g) => g.conversionRate || 0));
  const step = (width - pad * 2) / groups.length;
  const barWidth = Math.min(90, step * 0.6);
  const bars = groups.map((g, n) => {
    const h = Math.round((barsHeight - pad * 2) * (g.conversionRate || 0) / most);
    const x = pad + n * step + (step - barWidth) / 2, y = barsHeight - pad - h;
    const holdout = g.group === "holdout" ? " holdout" : "";
    return `<rect class="bar${holdout}" x="${x}" y="${y}" width="${barWidth}" height="${h}"><title>${esc(g.group)}: ${percent(g.conversionRate)} (${g.conversions} of ${g.firings})</title></rect>
      <text class="value" x="${x + barWidth / 2}" y="${y - 4}" text-anchor="middle">${percent(g.conversionRate)}</text>
      <text class="axis" x="${x + barWidth / 2}" y="${barsHeight - pad + 16}" text-anchor="middle">${esc(g.group)}</text>`;
  }).join("");
  let whiskers = "";
  if (lifted.length) {
    // The scale covers every interval and zero; an unbounded end is drawn to the edge.
    const ends = lifted.flatMap((g) => [g.lift.difference, ...(g.lift.differenceCi95 || [])]).filter((v) => v !== null);
    const low = Math.min(0, ...ends), high = Math.max(0, ...ends);
    const span = Math.max(0.01, high - low) * 1.1, left = low - (span - (high - low)) / 2;
    const labelWidth = 110, plotLeft = pad + labelWidth, plotWidth = width - plotLeft - pad;
    const xOf = (v) => plotLeft + plotWidth * (v - left) / span;
    const top = barsHeight + 40;
    const zero = xOf(0);
    whiskers = `<text class="panel" x="${pad}" y="${barsHeight + 20}">Lift vs holdout (difference, 95% interval)</text>
      <line class="zero" x1="${zero}" y1="${top - 6}" x2="${zero}" y2="${top + rowHeight * lifted.length}"></line>
      ${[low, 0, high].filter((v, n, all) => all.indexOf(v) === n).map((v) => `<text class="axis" x="${xOf(v)}"
        y="${top + rowHeight * lifted.length + 16}" text-anchor="middle">${v === 0 ? "0" : points(v)}</text>`).join("")}`
      + lifted.map((g, n) => {
        const [lo, hi] = g.lift.differenceCi95 || [null, null];
        const y = top + rowHeight * n + rowHeight / 2;
        const x1 = lo === null ? plotLeft : xOf(lo), x2 = hi === null ? plotLeft + plotWidth : xOf(hi);
        return `<g class="whisker" data-group="${esc(g.group)}"><title>${esc(g.group)}: ${points(g.lift.difference)}, 95% interval ${points(lo)} to ${points(hi)}</title>
          <text class="axis" x="${pad}" y="${y + 4}">${esc(g.group)}</text>
          <line x1="${x1}" y1="${y}" x2="${x2}" y2="${y}"></line>
          <line x1="${x1}" y1="${y - 6}" x2="${x1}" y2="${y + 6}"></line><line x1="${x2}" y1="${y - 6}" x2="${x2}" y2="${y + 6}"></line>
          <circle cx="${xOf(g.lift.difference)}" cy="${y}" r="4"></circle></g>`;
      }).join("");
  }
  const summary = groups.map((g) => `${g.group} ${percent(g.conversionRate)}`
    + (g.lift ? ` (lift ${points(g.lift.difference)}, 95% interval ${points((g.lift.differenceCi95 || [null])[0])} to ${points((g.lift.differenceCi95 || [null, null])[1])})` : "")).join("; ");
  return `<figure class="chart report-chart"><svg id="report-chart" viewBox="0 0 ${width} ${height}" role="img" aria-labelledby="report-chart-title report-chart-desc">
      <title id="report-chart-title">Conversion rate per group and lift versus the holdout</title>
      <desc id="report-chart-desc">${esc(summary)}. The table below holds every number.</desc>
      <line class="axis-line" x1="${pad}" y1="${barsHeight - pad}" x2="${width - pad}" y2="${barsHeight - pad}"></line>${bars}${whiskers}</svg>
    <figcaption>Conversion rate per group (bars) and lift versus the holdout with its 95% interval (whiskers); the table below has the numbers.</figcaption>
  </figure>`;
}

// -- activity ------------------------------------------------------------------------------

const KINDS = [["firings", "Firings"], ["shadow", "Shadow firings"], ["suppressed", "Suppressions"], ["deadletters", "Dead letters"]];

async function activityPage() {
  const query = hashQuery();
  const kind = query.get("kind") || "firings";
  const view = page("Activity", `<h1>Activity</h1>
    <form id="activity-form" class="filters" role="search" aria-label="Filter activity">
      <div><label for="a-kind">Show</label><select id="a-kind">${KINDS.map(([v, l]) =>
        `<option value="${v}"${v === kind ? " selected" : ""}>${l}</option>`).join("")}</select></div>
      <div><label for="a-trigger">Trigger id</label><input id="a-trigger" type="text" value="${esc(query.get("trigger") || "")}"></div>
      <div><label for="a-customer">Customer id</label><input id="a-customer" type="text" value="${esc(query.get("customer") || "")}"></div>
      <div class="end"><button type="submit">Show</button></div>
    </form>
    <div id="activity" aria-live="polite"><p>Loading…</p></div>`);
  document.getElementById("activity-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams({kind: document.getElementById("a-kind").value});
    for (const [id, key] of [["a-trigger", "trigger"], ["a-customer", "customer"]]) {
      const v = document.getElementById(id).value.trim();
      if (v) params.set(key, v);
    }
    const target = "#/activity?" + params;
    if (location.hash === target) route();  // the same filters: load again
    else location.hash = target;
  });
  await loadActivity(view, kind, query.get("trigger"), query.get("customer"));
}

async function loadActivity(view, kind, trigger, customer) {
  const params = new URLSearchParams({kind, limit: "100"});
  if (trigger) params.set("trigger", trigger);
  if (customer) params.set("customer", customer);
  const result = await api("GET", "/activity?" + params);
  if (stale(view)) return;
  const box = document.getElementById("activity");
  if (!result.ok) { box.innerHTML = `<p class="error">${esc(apiError(result))}</p>`; return; }
  const records = result.data.records || [];
  if (!records.length) { box.innerHTML = `<p id="activity-empty">Nothing recent.</p>`; return; }
  const cells = (r) => {
    const v = r.value && typeof r.value === "object" ? r.value : {value: r.value};
    const c = v.command || {};
    if (kind === "suppressed") return [v.at, v.triggerId, v.customerId, v.reason + (v.policyId ? " (" + v.policyId + ")" : "")];
    if (kind === "deadletters") return [v.at, v.triggerId || c.triggerId || "", v.customerId || v.key || "",
      (v.actionType ? v.actionType + ": " : "") + (v.reason || "")];
    return [v.firedAt, v.triggerId, v.customerId, ((v.action || {}).type || "") + " · event " + (v.eventId || "")];
  };
  const head = kind === "suppressed" ? "Reason" : (kind === "deadletters" ? "Reason" : "Action");
  box.innerHTML = `<table id="activity-table"><caption class="sr-only">${esc(kind)}</caption>
    <thead><tr><th scope="col">At (UTC)</th><th scope="col">Trigger</th><th scope="col">Customer</th><th scope="col">${head}</th>
    <th scope="col"><span class="sr-only">Details</span></th></tr></thead><tbody>
    ${records.map((r, i) => {
      const [at, triggerId, customerId, detail] = cells(r);
      const replay = kind === "deadletters" ? `<button type="button" data-replay="${i}">Replay</button>` : "";
      return `<tr><td>${esc(when(at))}</td><td>${triggerId ? `<a href="#/edit/${encodeURIComponent(triggerId)}">${esc(triggerId)}</a>` : ""}</td>
        <td>${esc(customerId)}</td><td>${esc(detail)}</td>
        <td>${replay}<details><summary>Record</summary><pre>${esc(pretty(r.value))}</pre></details></td></tr>`;
    }).join("")}</tbody></table>`;
  box.addEventListener("click", async (event) => {
    const index = event.target.dataset.replay;
    if (index === undefined) return;
    const r = records[Number(index)];
    event.target.disabled = true;
    const done = await api("POST", "/deadletters/replay", {records: [{topic: r.topic, partition: r.partition, offset: r.offset}]});
    const outcome = done.ok ? done.data.results[0] : {status: "failed", reason: apiError(done)};
    event.target.insertAdjacentHTML("afterend", ` <span class="${outcome.status === "replayed" ? "ok" : "error"} replay-status">`
      + `${esc(outcome.status)}${outcome.reason ? ": " + esc(outcome.reason) : ""}</span>`);
  });
}

// -- start ---------------------------------------------------------------------------------

document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();  // the hash is the page's route: move the focus instead
  main.focus();
});
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn("Signed out.");
});
// A 401 met by a background call (validation as you type) has already shown the sign-in.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof SignInNeeded) event.preventDefault();
});
window.addEventListener("hashchange", route);
route();
