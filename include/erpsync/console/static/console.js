// erpsync finance console: the little script the pages need (no framework, no inline script:
// the pages' Content-Security-Policy allows this file only).
"use strict";

// Every state change goes through here: JSON body + the header the server requires, so a
// page on another site cannot make the browser send it (the server refuses anything else).
async function erpsyncPost(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Erpsync-Request": "1" },
    body: JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : response.statusText;
    throw new Error(detail);
  }
  return data;
}

function erpsyncFlash(text, kind) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = text;
  box.className = kind || "";
}

// In-page confirmation (the Airflow UI's iframe sandbox blocks confirm()): the first click on a
// <button data-confirm="..."> arms it and shows the question; a second click within 8 s acts.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-confirm]");
  if (!button) return;
  if (button.dataset.armed === "1") {
    button.dataset.armed = "";
    button.classList.remove("armed");
    button.textContent = button.dataset.label;
    return; // let the page's own handler act
  }
  event.preventDefault();
  event.stopImmediatePropagation();
  button.dataset.label = button.textContent;
  button.dataset.armed = "1";
  button.classList.add("armed");
  button.textContent = button.dataset.confirm;
  setTimeout(() => {
    if (button.dataset.armed === "1") {
      button.dataset.armed = "";
      button.classList.remove("armed");
      button.textContent = button.dataset.label;
    }
  }, 8000);
}, true);

// Forms marked data-post send their fields as JSON to their data-post URL and reload on success.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-post]");
  if (!form) return;
  event.preventDefault();
  const body = {};
  for (const [key, value] of new FormData(form).entries()) {
    if (key.endsWith("[]")) {
      const name = key.slice(0, -2);
      (body[name] = body[name] || []).push(/^\d+$/.test(value) ? Number(value) : value);
    } else {
      body[key] = value;
    }
  }
  try {
    const data = await erpsyncPost(form.dataset.post, body);
    erpsyncFlash(form.dataset.done || "Done.", "ok");
    document.dispatchEvent(new CustomEvent("erpsync:posted", { detail: { form, data } }));
    if (!form.dataset.stay) setTimeout(() => window.location.reload(), 600);
  } catch (error) {
    erpsyncFlash(error.message, "error");
  }
});
