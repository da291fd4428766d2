/* fleet dashboard: live fleet table (SSE), buttons that call the JSON API, review shortcuts.
   No framework, no CDN: works offline. Mutations send the session's CSRF token. */
"use strict";

const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
const body = () => document.body.dataset;

function toast(text, bad) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = ""; }, 3500);
}

async function api(method, url, payload) {
  const res = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!res.ok) {
    const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : res.statusText;
    toast(`${res.status}: ${detail}`, true);
    throw new Error(detail);
  }
  return data;
}

function esc(value) {
  return String(value === null || value === undefined ? "–" : value).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/* ---- fleet page ---- */
function pct(x) { return x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`; }

function renderFleet(status) {
  const tbody = document.querySelector("#robots tbody");
  if (!tbody) return;
  const canOperate = body().canOperate === "true";
  tbody.innerHTML = status.robots.map((r) => {
    const s = r.stats || {};
    const cmd = (r.commands || [])[0];
    const cmdText = cmd ? `${esc(cmd.action)} <span class="cmd cmd-${esc(cmd.status)}">${esc(cmd.status)}</span>` : "–";
    const control = canOperate ? `<td class="control">
        <button type="button" data-cmd="pause">Pause</button><button type="button" data-cmd="resume">Resume</button><button
        type="button" data-cmd="stop" class="danger">Stop</button><button type="button" data-cmd="assign_task">Assign…</button><button
        type="button" data-cmd="out_of_rotation">Out of rotation</button></td>` : "";
    return `<tr data-robot="${esc(r.robot_id)}" data-state="${esc(r.state)}">
      <td>${esc(r.robot_id)}</td><td>${esc(r.embodiment)}</td><td>${esc(r.task_id)}</td><td>v${esc(r.model_version)}</td>
      <td><span class="state state-${esc(r.state)}">${esc(r.state)}</span>${r.error ? ` <span class="error">${esc(r.error)}</span>` : ""}</td>
      <td>${pct(s.success_rate)} <small>(${s.episodes || 0} ep)</small></td>
      <td>${s.intervention_steps_per_episode === undefined ? "–" : s.intervention_steps_per_episode.toFixed(1)}</td>
      <td class="${r.missed_ticks > 0 ? "warn" : ""}">${r.missed_ticks} <small>/ ${r.missed_ticks_total} total</small></td>
      <td>${cmdText}</td>${control}</tr>`;
  }).join("") || `<tr><td colspan="10" class="empty">No robot has sent a heartbeat yet.</td></tr>`;
  const counts = document.getElementById("counts");
  if (counts) {
    counts.innerHTML = Object.entries(status.counts).map(([k, v]) => `<span class="state state-${esc(k)}">${esc(k)} ${v}</span>`).join(" ")
      || "no robots";
  }
  const rollout = document.getElementById("rollout");
  if (rollout) {
    const versions = Object.entries(status.rollout.versions).map(([v, n]) => `v${esc(v)}: ${n}`).join(" · ") || "–";
    rollout.innerHTML = `production <b>v${esc(status.rollout.production)}</b> · running ${versions}` +
      (status.rollout.converged ? ` <span class="badge ok">converged</span>` : "");
  }
}

function streamEnded(text, relogin) {
  const live = document.getElementById("live");
  if (live) { live.className = "live ended"; live.title = "live updates ended"; }
  const note = document.getElementById("stream-ended");
  if (!note) { toast(text, true); return; }
  note.textContent = `${text} `;  // text only: the reason comes from the server, never parsed as HTML
  if (relogin) {
    const link = document.createElement("a");
    link.href = "/login?next=/fleet";
    link.textContent = "Log in again";
    note.appendChild(link);
  }
  note.hidden = false;
}

function initFleet() {
  const initial = document.getElementById("initial-status");
  if (initial && initial.textContent.trim().startsWith("{")) renderFleet(JSON.parse(initial.textContent));
  const live = document.getElementById("live");
  const source = new EventSource("/api/v1/fleet/events");
  source.addEventListener("status", (ev) => { renderFleet(JSON.parse(ev.data)); if (live) live.className = "live on"; });
  // The server ends the stream with `end` when this session or user lost access: stop, do not reconnect.
  source.addEventListener("end", (ev) => {
    source.close();
    let reason = "";
    try { reason = String(JSON.parse(ev.data).reason || ""); } catch (e) { reason = ""; }
    streamEnded(`Live updates ended: ${reason || "access ended"}.`, true);
  });
  source.onerror = () => {
    if (live) live.className = "live";
    // CLOSED: the browser will not retry (e.g. a 429 for too many open streams, or a 401 after logging out)
    if (source.readyState === EventSource.CLOSED) streamEnded("Live updates stopped: reload the page to retry.", false);
  };
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button");
    if (!btn) return;
    if (btn.dataset.cmd) {
      const robot = btn.closest("tr").dataset.robot;
      const payload = { action: btn.dataset.cmd, reason: "" };
      if (payload.action === "assign_task") {
        payload.task_id = prompt(`Task id for ${robot}:`);
        if (!payload.task_id) return;
        payload.instruction = prompt("Instruction:") || null;
      }
      if (payload.action === "stop" && !confirm(`Stop ${robot}?`)) return;
      await api("POST", `/api/v1/robots/${encodeURIComponent(robot)}/commands`, payload);
      toast(`${payload.action} sent to ${robot}`);
    } else if (btn.dataset.fleetAction) {
      const reason = prompt(`Reason to ${btn.dataset.fleetAction} the whole fleet:`);
      if (reason === null) return;
      const sent = await api("POST", "/api/v1/fleet/commands", { action: btn.dataset.fleetAction, reason });
      toast(`${btn.dataset.fleetAction} sent to ${sent.length} robots`);
    }
  });
}

/* ---- corrections page ---- */
async function reviewCurrent(decision) {
  const card = document.getElementById("correction");
  if (!card || body().canReview !== "true") return;
  const payload = { decision, reason: (document.getElementById("review-reason") || {}).value || "" };
  if (decision === "relabel") {
    const answer = prompt("Relabel the episode outcome: type 'success' or 'failure'");
    if (answer === null) return;
    payload.success = answer.trim().toLowerCase().startsWith("s");
  }
  const row = await api("POST", `/api/v1/corrections/${encodeURIComponent(card.dataset.id)}/review`, payload);
  const badge = document.getElementById("correction-status");
  if (badge) { badge.textContent = row.status; badge.className = `badge status-${row.status}`; }
  const item = document.querySelector(`#queue li[data-id="${CSS.escape(card.dataset.id)}"]`);
  if (item) item.className = `selected status-${row.status}`;
  toast(`${card.dataset.id}: ${row.status}`);
  setTimeout(() => move(1), 400);
}

function move(step) {
  const items = Array.from(document.querySelectorAll("#queue li[data-id]"));
  if (!items.length) return;
  const i = items.findIndex((li) => li.classList.contains("selected"));
  const next = items[Math.min(Math.max(i + step, 0), items.length - 1)];
  if (next && next !== items[i]) window.location.href = next.querySelector("a").href;
}

function initCorrections() {
  document.addEventListener("keydown", (ev) => {
    if (ev.target.matches("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key.toLowerCase();
    if (key === "j") move(1);
    else if (key === "k") move(-1);
    else if (key === "a") reviewCurrent("approve");
    else if (key === "r") reviewCurrent("reject");
    else if (key === "l") reviewCurrent("relabel");
  });
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-review]");
    if (btn) reviewCurrent(btn.dataset.review);
  });
}

/* ---- models page ---- */
function initModels() {
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-model-action]");
    if (!btn) return;
    const action = btn.dataset.modelAction;
    const version = btn.dataset.version;
    const reason = prompt(`Reason to ${action}${version ? ` v${version}` : ""} (required, goes to the audit log):`);
    if (!reason) return;
    const url = version ? `/api/v1/models/${encodeURIComponent(version)}/${action}` : `/api/v1/models/${action}`;
    await api("POST", url, { reason });
    toast(`${action} done`);
    setTimeout(() => window.location.reload(), 500);
  });
}

/* ---- canary page ---- */
function initCanary() {
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-canary-action]");
    if (!btn) return;
    const action = btn.dataset.canaryAction;
    const reason = prompt(`Reason to ${action} the canary (required, goes to the audit log):`);
    if (!reason) return;
    await api("POST", `/api/v1/canary/${action}`, { reason });
    toast(`canary ${action} done`);
    setTimeout(() => window.location.reload(), 500);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const logout = document.getElementById("logout");
  if (logout) logout.addEventListener("click", async () => { await api("POST", "/api/v1/auth/logout"); window.location.href = "/login"; });
  const page = body().page;
  if (page === "fleet") initFleet();
  else if (page === "corrections") initCorrections();
  else if (page === "models") initModels();
  else if (page === "canary") initCanary();
});
