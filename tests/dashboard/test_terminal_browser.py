"""The namespace page's live terminal in a real browser: xterm.js over the WebSocket to a shell
in the sandbox. Its buffer (xterm's own API) is what the tests read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.support.sdk import client
from tests.support.server import LiveServer

Shoot = Callable[[Page, str], Path]

# The rendered lines, trailing blanks trimmed, as a person reads them on the screen.
BUFFER_LINES = """() => {
  const buffer = window.troveTerminal.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines;
}"""


def _wait_for_line(page: Page, line: str) -> None:
    try:
        page.wait_for_function(f"() => ({BUFFER_LINES})().includes({line!r})")
    except Exception:
        print("terminal buffer:", page.evaluate(BUFFER_LINES))  # shown by pytest on failure
        raise


def _type(page: Page, text: str) -> None:
    page.locator("#terminal-screen").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def test_echo_hi_in_the_terminal_and_resize(
    admin_page: Page, server: LiveServer, namespace: str, shoot: Shoot
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/hello.txt", "made by the sdk\n")
        sdk.write("workspace/.trove/init.sh", "export GREETING=from-init.sh\n")
    refused: list[str] = []  # what the page's CSP blocked: xterm's styles and the socket must pass
    admin_page.on(
        "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
    )
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    admin_page.get_by_role("button", name="Open a terminal").click()
    expect(admin_page.locator("#terminal-status")).to_have_text("Connected: a shell in this sandbox.")

    _type(admin_page, "echo hi")
    _wait_for_line(admin_page, "hi")  # the answer on a line of its own, not the echoed command
    _type(admin_page, "cat workspace/hello.txt")
    _wait_for_line(admin_page, "made by the sdk")  # where execs run: workspace/ is in the cwd
    _type(admin_page, "echo $GREETING")
    _wait_for_line(admin_page, "from-init.sh")  # init.sh sourced, as before every exec
    shoot(admin_page, "terminal")

    before = admin_page.evaluate("() => [window.troveTerminal.rows, window.troveTerminal.cols]")
    admin_page.set_viewport_size({"width": 800, "height": 700})
    admin_page.wait_for_function(f"() => window.troveTerminal.cols !== {before[1]}")
    rows, cols = admin_page.evaluate("() => [window.troveTerminal.rows, window.troveTerminal.cols]")
    _type(admin_page, "stty size")
    _wait_for_line(admin_page, f"{rows} {cols}")  # the PTY follows the browser's size
    _type(admin_page, "echo still-$((40+2))")
    _wait_for_line(admin_page, "still-42")
    shoot(admin_page, "terminal-resized")
    assert refused == []


# The page's WebSocket, with its open event delivered when window.releaseOpen() is called.
HOLD_THE_OPEN = """() => {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  window.releaseOpen = release;
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    set onopen(handler) { super.onopen = (event) => gate.then(() => handler.call(this, event)); }
    get onopen() { return super.onopen; }
  };
}"""


def _terminal_events(server: LiveServer, namespace: str) -> list[str]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.admin_key}"}
    ) as http:
        page = http.get(
            f"/v1/workspaces/{server.workspace_id}/events",
            params={"namespace": namespace, "types": "terminal.opened"},
        ).json()
    return [event["type"] for event in page["events"]]


def test_a_page_view_starts_no_shell_and_typing_stays_in_the_form(
    admin_page: Page, server: LiveServer, namespace: str
) -> None:
    """CI caught it: the terminal connected on every page view and took the keyboard focus when
    its shell answered, so a snapshot label being typed went to the shell instead."""
    with client(server, namespace) as sdk:
        sdk.write("workspace/state.txt", "v1")
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    label = admin_page.get_by_label("Label (optional)")
    label.fill("viewed")
    admin_page.get_by_role("button", name="Take a snapshot").click()
    expect(admin_page.locator("#flash")).to_have_text("Snapshot taken.")
    expect(admin_page.locator("#terminal-status")).to_have_text(
        "Not connected: opening the terminal starts a shell in this sandbox."
    )
    assert _terminal_events(server, namespace) == []  # no shell was started behind the page

    # Opened, then the person types into the form while the shell is still starting. The
    # page learns of the open socket only when the test says so: that moment, which a loaded
    # machine makes late, cannot be forced from the server.
    admin_page.evaluate(HOLD_THE_OPEN)
    admin_page.get_by_role("button", name="Open a terminal").click()
    label.click()
    admin_page.keyboard.type("typed-while-connecting")
    admin_page.evaluate("() => window.releaseOpen()")
    expect(admin_page.locator("#terminal-status")).to_have_text("Connected: a shell in this sandbox.")
    admin_page.keyboard.type("-after")
    expect(label).to_have_value("typed-while-connecting-after")
    assert _terminal_events(server, namespace) == ["terminal.opened"]
