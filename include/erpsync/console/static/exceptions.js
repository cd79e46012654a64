// The exceptions worklist: select all on the page, count the selection, and after an action
// show what happened to each exception (done, or skipped and why) before reloading.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  const boxes = () => Array.from(document.querySelectorAll('input[name="ids[]"][type="checkbox"]'));
  const count = document.getElementById("selected-count");
  const refresh = () => { if (count) count.textContent = String(boxes().filter((b) => b.checked).length); };
  if (all) {
    all.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); refresh(); });
  }
  boxes().forEach((b) => b.addEventListener("change", refresh));
  refresh();
});

// Before the request: nothing selected is a mistake, not an empty action.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form#bulk");
  if (!form) return;
  if (!new FormData(form).getAll("ids[]").length) {
    event.preventDefault();
    event.stopImmediatePropagation();
    erpsyncFlash("Select at least one exception first.", "error");
  }
}, true);

document.addEventListener("erpsync:posted", (event) => {
  const results = (event.detail.data && event.detail.data.results) || [];
  const done = results.filter((r) => r.outcome === "done").length;
  const skipped = results.filter((r) => r.outcome !== "done");
  let text = `${event.detail.data.action}: ${done} done`;
  if (skipped.length) {
    text += `, ${skipped.length} skipped: ` + skipped.map((r) => `#${r.id} ${r.why}`).join("; ");
  }
  erpsyncFlash(text, skipped.length ? "warn" : "ok");
  setTimeout(() => window.location.reload(), skipped.length ? 4000 : 1200);
});
