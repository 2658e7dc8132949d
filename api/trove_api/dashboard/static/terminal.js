// The namespace page's live terminal: xterm.js (vendored) over a WebSocket to
// /dashboard/namespaces/<ns>/terminal. Binary frames both ways carry the PTY's bytes; a text
// frame {"type":"resize","rows":R,"cols":C} follows the terminal's size. The session's CSRF
// token rides in the URL: the server refuses a handshake without it or from another origin.
// The shell starts only when asked (the Open button): a page view must not wake a suspended
// sandbox, and keystrokes meant for the page's forms must never land in a shell.
"use strict";

(function () {
  const section = document.getElementById("terminal");
  const screen = document.getElementById("terminal-screen");
  if (!section || !screen || !window.Terminal || !window.FitAddon) return;
  const status = document.getElementById("terminal-status");
  const again = document.getElementById("terminal-reconnect");
  const open = document.getElementById("terminal-open");
  const namespace = section.dataset.terminalNamespace;

  const term = new window.Terminal({
    cursorBlink: true,
    screenReaderMode: true, // a live region people (and the tests) can read
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    fontSize: 14,
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  window.troveTerminal = term; // for the browser tests: its buffer is the ground truth

  let socket = null;
  const encoder = new TextEncoder();

  function say(text) { status.textContent = text; }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({
      csrf: document.body.dataset.csrf || "",
      rows: String(term.rows),
      cols: String(term.cols),
    });
    const url = `${scheme}//${location.host}/dashboard/namespaces/${encodeURIComponent(namespace)}/terminal?${query}`;
    socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    again.hidden = true;
    open.hidden = true;
    say("Connecting…");
    socket.onopen = () => {
      say("Connected: a shell in this sandbox.");
      // Only if the person is not typing elsewhere on the page meanwhile.
      const here = document.activeElement;
      if (!here || here === document.body || section.contains(here)) term.focus();
    };
    socket.onmessage = (event) => {
      if (event.data instanceof ArrayBuffer) term.write(new Uint8Array(event.data));
    };
    socket.onclose = (event) => {
      say(event.code === 1000 ? "The shell exited." : "Disconnected.");
      again.hidden = false;
      socket = null;
    };
  }

  term.onData((data) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  term.onBinary((data) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const bytes = Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff);
    socket.send(bytes);
  });
  term.onResize(({ rows, cols }) => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "resize", rows, cols }));
    }
  });
  new ResizeObserver(() => fit.fit()).observe(screen);
  again.addEventListener("click", () => { term.reset(); connect(); });
  open.addEventListener("click", connect);
})();
