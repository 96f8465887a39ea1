// The operator page: each section is a server-rendered partial (escaped by the server's
// templates), refreshed every few seconds; its forms are posted with fetch so the page stays
// where it is. Without this script the forms still work (the server answers with a redirect).
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const message = document.getElementById("message");
  const REFRESH_MS = 3000;

  function say(text, bad) {
    message.hidden = !text;
    message.textContent = text || "";
    message.className = "message" + (bad ? " bad" : "");
  }

  async function refresh(section) {
    // Not while the operator is typing into one of its forms.
    const active = document.activeElement;
    if (section.contains(active) && ["INPUT", "SELECT"].includes(active.tagName)) return;
    try {
      const response = await fetch(section.dataset.partial, { credentials: "same-origin" });
      if (response.ok) section.innerHTML = await response.text();
    } catch (err) {
      // The daemon is restarting: the next round will do.
    }
  }

  function refreshAll() {
    for (const section of document.querySelectorAll("section[data-partial]")) refresh(section);
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.matches("form[data-action]")) return;
    event.preventDefault();
    const data = new URLSearchParams(new FormData(form));
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        body: data,
      });
      const text = await response.text();
      if (!response.ok) {
        const login = response.status === 401 ? " Log in (top right) to act." : "";
        say(text.trim() + login, true);
        return;
      }
      say(JSON.parse(text).message, false);
    } catch (err) {
      say("The daemon did not answer: " + err.message, true);
    }
    const section = form.closest("section[data-partial]");
    if (section) refresh(section);
  });

  setInterval(refreshAll, REFRESH_MS);
})();
