"""``pty`` through the official e2b SDK: a real terminal that interactive programs answer."""

from __future__ import annotations

import contextlib
import threading
import time

from e2b import CommandHandle, PtySize, Sandbox


class Screen:
    """What a terminal printed, collected by a thread following the PTY's output."""

    def __init__(self, handle: CommandHandle) -> None:
        self.data = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, args=(handle,), daemon=True)
        self._thread.start()

    def _follow(self, handle: CommandHandle) -> None:
        # A killed terminal's stream ends in an error the test does not need.
        with contextlib.suppress(Exception):
            handle.wait(on_pty=self._add)

    def _add(self, chunk: bytes) -> None:
        with self._lock:
            self.data.extend(chunk)

    def wait_for(self, needle: bytes) -> None:
        for _ in range(400):
            with self._lock:
                if needle in self.data:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never appeared in {bytes(self.data[-500:])!r}")


def test_interactive_bash_answers_and_resize_changes_stty_size(sbx: Sandbox) -> None:
    sbx.files.make_dir("/home/user/term")
    terminal = sbx.pty.create(PtySize(rows=24, cols=80), cwd="/home/user/term", envs={"GREETING": "hi"})
    screen = Screen(terminal)
    # Computed by the shell, so the echo of the typed line cannot match it.
    sbx.pty.send_stdin(terminal.pid, b"echo $GREETING-$((40+2)); ls ..\n")
    screen.wait_for(b"hi-42")
    screen.wait_for(b"term")
    sbx.pty.send_stdin(terminal.pid, b"stty size | sed 's/ /x/'\n")
    screen.wait_for(b"24x80")
    sbx.pty.resize(terminal.pid, PtySize(rows=40, cols=120))
    sbx.pty.send_stdin(terminal.pid, b"stty size | sed 's/ /x/'\n")
    screen.wait_for(b"40x120")
    assert sbx.pty.kill(terminal.pid) is True


def test_python_repl_answers_keystrokes_and_connect_replays(sbx: Sandbox) -> None:
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    screen = Screen(terminal)
    sbx.pty.send_stdin(terminal.pid, b"python3 -q\n")
    screen.wait_for(b">>> ")
    sbx.pty.send_stdin(terminal.pid, b"6 * 7\n")
    screen.wait_for(b"42")
    # A second client attaches while the first still follows: it sees what was printed before.
    Screen(sbx.pty.connect(terminal.pid)).wait_for(b"42")
    sbx.pty.send_stdin(terminal.pid, b"exit()\n")
    sbx.pty.send_stdin(terminal.pid, b"exit\n")
    assert sbx.pty.connect(terminal.pid).wait().exit_code == 0
