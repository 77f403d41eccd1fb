// The dashboard: the API's JSON for the first view, then its event stream (server-sent events read through fetch,
// so the bearer token can travel in a header) for what happens next. No framework, no build step, no CDN.
"use strict";

const API = "/api/v1";
const MAX_ROWS = 200;
const state = { selected: null, sessions: new Map(), equityTs: [], equity: [] };

const $ = (sel) => document.querySelector(sel);
const token = () => localStorage.getItem("papertape-token") || "";

function say(text) { $("#message").textContent = text || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({ "content-type": "application/json" }, options.headers || {});
  if (token()) headers.authorization = "Bearer " + token();
  const response = await fetch(API + path, Object.assign({}, options, { headers }));
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (response.status === 401) say("the API wants a token: paste it above");
  if (!response.ok && response.status !== 202 && response.status !== 409) {
    throw new Error((body && body.detail && JSON.stringify(body.detail)) || response.statusText);
  }
  return { status: response.status, body };
}

const utc = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 23);
const signed = (text) => (text && text.startsWith("-") ? "neg" : text && text !== "0" ? "pos" : "");

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function prepend(table, row) {
  const body = table.tBodies[0];
  body.insertBefore(row, body.firstChild);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}

// --- sessions --------------------------------------------------------------------------------------------------
function sessionRow(s) {
  let row = $(`#sessions tr[data-session="${CSS.escape(s.session)}"]`);
  if (!row) {
    row = $("#sessions").tBodies[0].insertRow();
    row.dataset.session = s.session;
    row.addEventListener("click", (e) => { if (e.target.tagName !== "BUTTON") select(s.session); });
  }
  row.replaceChildren();
  cell(row, s.session);
  const status = cell(row, s.status || "?", "status-" + (s.status || "unknown"));
  status.dataset.status = s.status || "";
  status.className += " status";
  cell(row, s.strategy);
  cell(row, s.intel, "num");
  cell(row, s.equity, "num equity");
  cell(row, s.cash, "num");
  cell(row, s.open_positions, "num");
  cell(row, s.fills, "num fills");
  cell(row, (s.breakers || []).join(", "));
  const actions = cell(row, "");
  for (const command of ["pause", "resume", "stop"]) {
    const b = document.createElement("button");
    b.textContent = command;
    b.dataset.action = command;
    b.dataset.session = s.session;
    b.addEventListener("click", () => control(s.session, command));
    actions.append(b, " ");
  }
  if (s.session === state.selected) row.classList.add("selected");
}

async function loadSessions() {
  const { body } = await api("/sessions");
  for (const s of body) { state.sessions.set(s.session, s); sessionRow(s); }
  if (!state.selected && body.length) await select(body[0].session);
}

async function control(session, command, config) {
  say(`${command} ${session}: sent…`);
  try {
    const { status, body } = await api(`/sessions/${encodeURIComponent(session)}/${command}`,
                                       { method: "POST", body: config ? JSON.stringify(config) : undefined });
    if (status === 409) say(`${command} ${session} refused: ${body.reason}`);
    else if (status === 202) say(`${command} ${session}: sent; the engine applies it when it reads it`);
    else { say(`${command} ${session}: ${body.status.status}`); applyStatus(body.status); }
  } catch (e) { say(`${command} ${session} failed: ${e.message}`); }
}

function applyStatus(msg) {
  const s = state.sessions.get(msg.session) || { session: msg.session, fills: 0, open_positions: 0 };
  Object.assign(s, { status: msg.status, strategy: msg.strategy, intel: msg.intel,
                     breakers: Object.keys(msg.breakers || {}) });
  state.sessions.set(msg.session, s);
  sessionRow(s);
}

// --- one session's detail ----------------------------------------------------------------------------------------
async function select(session) {
  state.selected = session;
  for (const row of document.querySelectorAll("#sessions tr[data-session]")) {
    row.classList.toggle("selected", row.dataset.session === session);
  }
  $("#equity-session").textContent = session;
  const q = encodeURIComponent(session);
  const [equity, positions, fills, decisions] = await Promise.all([
    api(`/sessions/${q}/equity?points=2000`), api(`/sessions/${q}/positions`),
    api(`/sessions/${q}/fills?limit=${MAX_ROWS}`), api(`/sessions/${q}/decisions?limit=${MAX_ROWS}`)]);
  state.equityTs = equity.body.map((p) => new Date(p.ts));
  state.equity = equity.body.map((p) => Number(p.equity));
  Plotly.newPlot("equity", [{ x: state.equityTs, y: state.equity, mode: "lines", name: "equity",
                              line: { width: 1.5 } }],
                 { margin: { t: 10, r: 10, b: 30, l: 70 }, xaxis: { type: "date" }, yaxis: { tickformat: ",.2f" } },
                 { displaylogo: false, responsive: true });
  $("#positions").tBodies[0].replaceChildren();
  for (const p of positions.body) positionRow(p);
  $("#fills").tBodies[0].replaceChildren();
  for (const f of fills.body) fillRow(f);
  $("#decisions").tBodies[0].replaceChildren();
  for (const d of decisions.body) decisionRow(d);
}

function positionRow(p) {
  let row = $(`#positions tr[data-symbol="${CSS.escape(p.symbol)}"]`);
  if (Number(p.qty) === 0) { if (row) row.remove(); return; }
  if (!row) { row = $("#positions").tBodies[0].insertRow(); row.dataset.symbol = p.symbol; }
  row.replaceChildren();
  cell(row, p.symbol);
  cell(row, p.qty, "num");
  cell(row, p.avg_price, "num");
  cell(row, p.mark, "num");
  cell(row, p.unrealized_pnl, "num " + signed(p.unrealized_pnl));
}

function fillRow(f) {
  if (document.querySelector(`#fills tr[data-fill-id="${CSS.escape(f.id)}"]`)) return;
  const row = document.createElement("tr");
  row.dataset.fillId = f.id;
  cell(row, utc(f.ts));
  cell(row, f.symbol);
  cell(row, f.side, f.side === "buy" ? "pos" : "neg");
  cell(row, f.qty, "num");
  cell(row, f.price, "num");
  cell(row, f.fee, "num");
  cell(row, f.realized_pnl, "num " + signed(f.realized_pnl));
  prepend($("#fills"), row);
}

function decisionRow(d) {
  const row = document.createElement("tr");
  row.dataset.decisionId = d.id;
  cell(row, utc(d.ts));
  cell(row, d.symbol);
  cell(row, d.action);
  cell(row, Number(d.confidence).toFixed(2), "num");
  cell(row, d.reasoning, "reason");
  prepend($("#decisions"), row);
}

// --- alerts ------------------------------------------------------------------------------------------------------
function alertRow(a) {
  if (document.querySelector(`#alerts tr[data-alert-id="${CSS.escape(a.id)}"]`)) return;
  const row = document.createElement("tr");
  row.dataset.alertId = a.id;
  cell(row, utc(a.ts));
  cell(row, a.severity, "sev-" + a.severity);
  cell(row, a.type);
  cell(row, `${a.title}${a.session ? " [" + a.session + "]" : ""}: ${a.text}`, "reason");
  const action = cell(row, "");
  if (a.acknowledged_ts) action.textContent = "acknowledged";
  else {
    const b = document.createElement("button");
    b.textContent = "ack";
    b.dataset.action = "ack";
    b.addEventListener("click", async () => {
      try {
        await api(`/alerts/${encodeURIComponent(a.id)}/ack`, { method: "POST", body: JSON.stringify({ by: "dashboard" }) });
        action.textContent = "acknowledged";
      } catch (e) { say(`ack failed: ${e.message}`); }
    });
    action.append(b);
  }
  prepend($("#alerts"), row);
}

async function loadAlerts() {
  const { body } = await api("/alerts?limit=100");
  for (const a of body.reverse()) alertRow(a);
}

// --- the live stream ---------------------------------------------------------------------------------------------
let connections = 0;

async function refresh() {  // what happened while the stream was down is in the archive
  await loadSessions();
  if (state.selected) await select(state.selected);
  await loadAlerts();
}

const handlers = {
  ready() {
    $("#conn").textContent = "live";
    $("#conn").className = "live";
    if (connections++ > 0) refresh().catch((e) => say(e.message));
  },
  session: applyStatus,
  fill(f) {
    const s = state.sessions.get(f.session);
    if (s) { s.fills = (s.fills || 0) + 1; sessionRow(s); }
    if (f.session === state.selected) fillRow(f);
  },
  position(p) { if (p.session === state.selected) positionRow(p); },
  decision(d) { if (d.session === state.selected) decisionRow(d); },
  equity(e) {
    const s = state.sessions.get(e.session);
    if (s) { Object.assign(s, { equity: e.equity, cash: e.cash, open_positions: e.open_positions }); sessionRow(s); }
    if (e.session === state.selected && document.getElementById("equity").data) {
      Plotly.extendTraces("equity", { x: [[new Date(e.ts)]], y: [[Number(e.equity)]] }, [0], 20000);
    }
  },
  alert(a) { alertRow(Object.assign({ acknowledged_ts: null }, a)); },
};

async function follow() {
  for (;;) {
    try {
      const headers = token() ? { authorization: "Bearer " + token() } : {};
      const response = await fetch(API + "/stream?holds=false", { headers });
      if (!response.ok) throw new Error(response.statusText);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          let event = "message", data = "";
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (handlers[event] && data) handlers[event](JSON.parse(data));
        }
      }
    } catch (e) { /* the API or the run went away: try again */ }
    $("#conn").textContent = "reconnecting…";
    $("#conn").className = "";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// --- start -------------------------------------------------------------------------------------------------------
$("#start-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const config = { strategy: f.get("strategy"), intel: Number(f.get("intel")), balance: f.get("balance"),
                   symbols: String(f.get("symbols")).split(",").map((x) => x.trim()).filter(Boolean) };
  control(String(f.get("id")), "start", config);
});

$("#token").value = token();
$("#token").addEventListener("change", (e) => { localStorage.setItem("papertape-token", e.target.value); location.reload(); });

follow();
loadSessions().then(loadAlerts).catch((e) => say(e.message));
