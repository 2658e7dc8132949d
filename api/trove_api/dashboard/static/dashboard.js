// Trove dashboard: the few behaviours plain forms cannot have. No inline script anywhere (CSP).
"use strict";

function csrfToken() { return document.body.dataset.csrf || ""; }

// Every htmx request carries the CSRF token in a header.
document.addEventListener("htmx:configRequest", (event) => {
  event.detail.headers["X-CSRF-Token"] = csrfToken();
});

// Forms marked data-confirm ask first (deletes, restores, revocations).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Copy buttons next to secrets shown once.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

// Upload with a progress bar: the file streams as the request body (PUT), as PUT /files does.
function setupUpload() {
  const form = document.getElementById("upload");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = document.getElementById("upload-file").files[0];
    if (!file) return;
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const target = form.dataset.directory + file.name;
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/dashboard/namespaces/${encodeURIComponent(form.dataset.namespace)}/upload?path=${encodeURIComponent(target)}`);
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    bar.hidden = false;
    bar.value = 0;
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 200) {
        bar.value = 100;
        status.textContent = `Uploaded ${target}`;
        const here = new URL(window.location.href);
        here.searchParams.set("file", target);
        here.hash = "preview";
        window.location.assign(here.toString());
      } else {
        status.textContent = `Upload failed (${xhr.status})`;
      }
    });
    xhr.addEventListener("error", () => { status.textContent = "Upload failed: connection lost"; });
    status.textContent = `Uploading ${file.name}…`;
    xhr.send(file);
  });
}

// Live events: the SSE stream; new rows on top; paused, they wait in a buffer.
function setupEvents() {
  const table = document.getElementById("events");
  if (!table) return;
  const body = table.querySelector("tbody");
  const status = document.getElementById("stream-status");
  const pause = document.getElementById("pause");
  let paused = false;
  const waiting = [];
  const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
  const show = (ev) => {
    const row = document.createElement("tr");
    row.dataset.eventId = ev.id;
    const code = document.createElement("code");
    code.textContent = JSON.stringify(ev.data);
    const data = document.createElement("td");
    data.appendChild(code);
    row.append(cell((ev.created_at || "").slice(0, 19).replace("T", " ")), cell(ev.type),
      cell(ev.namespace || ""), cell(ev.actor ? ev.actor.key_name : ""), data);
    body.prepend(row);
    while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
  };
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("message", (message) => {
    const ev = JSON.parse(message.data);
    if (ev.type === "connected") { status.textContent = "live"; return; }
    if (paused) { waiting.push(ev); status.textContent = `paused: ${waiting.length} waiting`; }
    else show(ev);
  });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { waiting.splice(0).forEach(show); status.textContent = "live"; }
    else status.textContent = "paused";
  });
}

document.addEventListener("DOMContentLoaded", () => { setupUpload(); setupEvents(); });
