// Sluice dashboard: swaps in the live part the server pushes, runs actions after a
// confirmation, counts down pauses. Everything shown is rendered (and escaped) by the server.
"use strict";

const token = document.querySelector('meta[name="sluice-token"]').content;
const live = document.getElementById("live");
const conn = document.getElementById("conn");

function countdown() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-ends-at]")) {
    const left = Math.max(0, Math.round((Date.parse(el.dataset.endsAt) - now) / 1000));
    const m = Math.floor(left / 60);
    el.textContent = (m > 0 ? m + "m" + (left % 60) + "s" : left + "s") + " left";
  }
}
setInterval(countdown, 1000);
countdown();

if (live && live.dataset.live) {
  const events = new EventSource(live.dataset.live);
  events.addEventListener("render", (e) => {
    live.innerHTML = e.data;
    live.dataset.updates = String(Number(live.dataset.updates || 0) + 1);
    countdown();
  });
  events.onopen = () => { conn.textContent = "live"; };
  events.onerror = () => { conn.textContent = "reconnecting…"; };
}

const actions = document.querySelector("section.actions");
if (actions) {
  const dialog = document.getElementById("confirm");
  const text = document.getElementById("confirm-text");
  const result = document.getElementById("result");
  let pending = null;
  actions.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    pending = button.dataset.action;
    // The HTML standard leaves returnValue as it was when a dialog is cancelled (Escape):
    // clear it, so that a cancel after a confirmation is never taken for one.
    dialog.returnValue = "";
    text.textContent = button.dataset.label + " " + actions.dataset.namespace + "/" +
      actions.dataset.name + ": " + button.dataset.what + "?";
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "ok" || !pending) return;
    const action = pending;
    pending = null;
    result.className = "";
    result.textContent = action + "…";
    const url = "/api/rollouts/" + encodeURIComponent(actions.dataset.namespace) + "/" +
      encodeURIComponent(actions.dataset.name) + "/" + action;
    try {
      const res = await fetch(url, { method: "POST", headers: { "x-sluice-token": token } });
      const body = await res.json();
      result.className = body.ok ? "ok" : "failed";
      result.setAttribute("role", body.ok ? "status" : "alert");
      result.textContent = (body.ok ? "Done: " : "Failed: ") + body.message;
    } catch (err) {
      result.className = "failed";
      result.textContent = "Failed: " + err;
    }
  });
}
