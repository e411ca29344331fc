// singura-vault console: progressive enhancement only; every page works without it.
// Loaded from the console's origin (the CSP allows no inline script).
"use strict";

// A copy button for the new API key (hidden until JavaScript can make it work).
function enableCopyButtons() {
  for (const button of document.querySelectorAll("button.copy[data-copy-target]")) {
    const field = document.getElementById(button.dataset.copyTarget);
    const status = button.parentElement.querySelector(".copy-status");
    if (!field || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        if (status) status.textContent = "Copied.";
      } catch (_err) {
        field.select();
        if (status) status.textContent = "Select the key and copy it (Ctrl+C).";
      }
    });
  }
}

// Confirmation before destructive forms (revoking a key).
function enableConfirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

// Live rewrap progress: poll the job while it runs.
function pollRewrap() {
  const box = document.querySelector("[data-rewrap-job]");
  if (!box || box.dataset.rewrapRunning !== "yes") return;
  const bar = box.querySelector("progress");
  const set = (name, value) => {
    const el = box.querySelector(`[data-field="${name}"]`);
    if (el) el.textContent = String(value);
  };
  const tick = async () => {
    let job;
    try {
      const response = await fetch(`/keys/rewrap/${encodeURIComponent(box.dataset.rewrapJob)}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      job = await response.json();
    } catch (_err) {
      window.setTimeout(tick, 5000);
      return;
    }
    set("state", job.state);
    set("done", job.done);
    set("total", job.total);
    set("failed", job.failed);
    set("update_time", job.update_time);
    if (bar) {
      bar.max = job.total || 1;
      bar.value = job.done;
    }
    if (job.state === "running") window.setTimeout(tick, 2000);
    else box.dataset.rewrapRunning = "no";
  };
  window.setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  enableCopyButtons();
  enableConfirmations();
  pollRewrap();
});
