"""Every code example of the product pages (seed 000: SDK page, seed 001: API reference) runs here.

Each snippet is kept verbatim in a string below, so it is easy to audit against the pages (and
``test_snippets_are_verbatim_copies_of_the_seeds`` checks that when the seed files are present).
``adapt`` makes the only edits: the placeholder credentials ``"trove-sk-..."``,
``"trove-sk-admin-..."``, ``"ws-..."`` and ``"key-..."`` become real values, and every client
constructor gets ``base_url=BASE_URL`` so it talks to the live server instead of production.
Names a snippet takes from its surroundings (``client``, ``TROVE_ADMIN_KEY``, ``customer_id``,
``system_prompt``, ...) are bound to fixture values. Top-level ``await`` runs as written.
Fixtures create what a snippet expects to find: ``image.png`` / ``report.pdf`` in a temporary
cwd, a file containing ``TODO``, a venv under ``workspace/data``.
"""

from __future__ import annotations

import ast
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from trove_sdk import TroveAuthError, TroveClient, TroveNotFoundError

from tests.support.cluster import backend, sandbox_host
from tests.support.sdk import admin, client
from tests.support.server import LiveServer

# shared/ sits beside the repository (the session's /work/shared, or CI's copy next to its clone).
SEEDS_DIR = Path(__file__).resolve().parents[3] / "shared" / "seeds"

# ── seed 000 (SDK page) ──────────────────────────────────────────────────────

SEED000_FILESYSTEM = """
from trove_sdk import TroveClient

with TroveClient(api_key="trove-sk-...", namespace="alice") as client:
    # Run shell commands
    client.exec("mkdir -p workspace/data")
    output = client.exec("ls workspace/")

    # Write a text file
    client.write("workspace/data/notes.txt", "hello world")

    # Upload binary
    with open("image.png", "rb") as f:
        client.upload("workspace/data/image.png", f)

    # Delete
    client.delete("workspace/data/notes.txt")
"""

SEED000_ASYNC = """
from trove_sdk import AsyncTroveClient

async with AsyncTroveClient(api_key="trove-sk-...", namespace="alice") as client:
    await client.exec("echo hello")
    await client.write("workspace/hello.txt", "hi")
"""

SEED000_KEY_MANAGEMENT = """
from trove_sdk import TroveAdminClient

with TroveAdminClient(api_key="trove-sk-admin-...", workspace_id="ws-...") as admin:
    # Mint a scoped key for a customer
    key = admin.create_key("customer-alice", namespace="alice")
    print(key.api_key)  # store this — shown once

    # List active keys
    keys = admin.list_keys()

    # Revoke
    admin.revoke_key(key.key_id)
"""

# ── seed 001 (API reference) ─────────────────────────────────────────────────

SEED001_QUICKSTART = """
# pip install trove-sdk
from trove_sdk import TroveClient
client = TroveClient(api_key="trove-sk-...", namespace="my-agent")
# Write a file
client.write("workspace/notes.md", "# Notes")
# Run any shell command — returns stdout, raises TroveExecError on
# non-zero exit. Use exec_detailed() if you'd rather inspect the
# exit code than catch.
print(client.exec("ls -la workspace/"))
"""

SEED001_EXEC = """
# Simple case: returns stdout as a string. Raises TroveExecError on
# non-zero exit (carries exit_code, stdout, stderr) so a failing
# command never silently looks like normal output.
output = client.exec('grep -r "TODO" workspace/')
print(output)
# Want to inspect the exit code without an exception? Use exec_detailed —
# returns ExecResult(exit_code, stdout, stderr, duration_ms).
result = client.exec_detailed("pytest tests/")
if result.exit_code != 0:
    print("failures on stderr:", result.stderr)
"""

SEED001_WRITE = """
result = client.write("workspace/notes.md", "# Notes\\n...")
print(result.path, result.size_bytes)
"""

SEED001_UPLOAD = """
with open("report.pdf", "rb") as f:
    result = client.upload("workspace/report.pdf", f)
print(result.size_bytes)
"""

SEED001_DELETE = """
client.delete("workspace/notes.md")
"""

SEED001_EXEC_CHAIN = """
# Multi-step within ONE shell — cwd and shell variables hold for the chain.
result = client.exec_chain([
    "cd workspace/data",
    "TOKEN=$(curl -s https://api.example.com/token)",
    'curl -H "Authorization: $TOKEN" https://api.example.com/feed -o feed.json',
])
# Stops on first non-zero exit, just like shell &&. 30s wall clock applies
# to the whole chain.
# Separate exec calls — TOKEN is gone between them. Persist via a file:
client.exec("curl -s https://api.example.com/token > workspace/.token")
client.exec('curl -H "Authorization: $(cat workspace/.token)" ... -o workspace/feed.json')
"""

SEED001_INIT_SH = '''
# Without init.sh — every command repeats the setup
client.exec("cd workspace/data && source .venv/bin/activate && python analyze.py")
client.exec("cd workspace/data && source .venv/bin/activate && pytest tests/")
# With init.sh — set the prelude once, run cleanly forever
client.set_init("""
cd workspace/data
source .venv/bin/activate
""")
client.exec("python analyze.py") # cwd, venv, env all carry over
client.exec("pytest tests/") # same context — no re-setup
'''

SEED001_INIT_MANAGE = """
client.set_init("cd workspace/data\\nexport DATE=2026-05-06\\n")
client.get_init() # → the script text, or None if unset
client.clear_init() # → True if removed, False if never set
"""

SEED001_BOOTSTRAP = '''
# At the end of a session — leave a handoff note for the next instance.
# It's just a markdown file at a known path; the runtime doesn't parse it.
client.write("workspace/.trove/agent.md", """## What I learned
- Salesforce OAuth needs the 'api' scope, not 'read'
- Cache primed at workspace/.cache/q3.json — reuse, don't recompute
""")
# Next session — one call returns recent files, the active init.sh, and the
# previous session's handoff note. Pipe straight into the system prompt.
bs = client.bootstrap()
system_prompt += bs.as_system_prompt_block()
# <workspace>
# namespace: alice
# files: 12; last edited 2026-05-07T20:00:00Z
# recent: workspace/data.csv (3.4KB), workspace/report.md (140B), ...
# init.sh: cd workspace/data; source .venv/bin/activate
# last_session: |
# ## What I learned
# - Salesforce OAuth needs the 'api' scope, not 'read'
# ...
# </workspace>
'''

SEED001_MULTI_TENANCY = """
from trove_sdk import TroveAdminClient, TroveClient

# ── On customer signup (your backend, never the browser) ──────────────────────
admin = TroveAdminClient(
    api_key=TROVE_ADMIN_KEY,  # your long-lived admin key
    workspace_id=TROVE_WORKSPACE_ID,
)
key = admin.create_key(
    f"customer-{customer_id}",
    namespace=f"customer-{customer_id}",
)
# Store key.key_id in your DB — you'll need it to revoke
# Give key.api_key to the backend service running this customer's agent

# ── Customer agent ────────────────────────────────────────────────────────────
# Scoped key auto-defaults X-Namespace — namespace arg here is optional
trove = TroveClient(api_key=customer_key, namespace=f"customer-{customer_id}")
trove.write("workspace/memory/prefs.md", "prefers bullet points")
trove.exec("cat workspace/memory/prefs.md")

# ── On churn / account deletion ───────────────────────────────────────────────
admin.revoke_key(stored_key_id)
# Any request using that key immediately returns 401
"""

SEED001_MANAGE_KEYS = """
from trove_sdk import TroveAdminClient

admin = TroveAdminClient(api_key="trove-sk-admin-...", workspace_id="ws-...")

# Mint a scoped key for a new customer
key = admin.create_key("customer-acme", namespace="customer-acme")
print(key.api_key)  # store this — shown once
"""

SEED001_REVOKE_ON_CHURN = """
admin.revoke_key("key-...")
"""

SEED001_SESSIONS = '''
# provision.py — backend, holds the admin key
import os
from trove_sdk import TroveAdminClient

admin = TroveAdminClient(
    api_key=os.environ["TROVE_ADMIN_KEY"],  # never leaves your backend
    workspace_id=os.environ["TROVE_WORKSPACE_ID"],
)

def start_session(session_id: str) -> dict:
    """Mint a throwaway key bound to this session's namespace."""
    namespace = f"session-{session_id}"
    key = admin.create_key(name=f"agent:{session_id}", namespace=namespace)
    # Persist key.key_id with your session record — you'll need it to revoke
    return {"namespace": namespace, "key_id": key.key_id, "api_key": key.api_key}

def end_session(key_id: str) -> None:
    """Revoke. In-flight requests with this key now return 401."""
    admin.revoke_key(key_id)
'''

SNIPPETS = {
    "000": [SEED000_FILESYSTEM, SEED000_ASYNC, SEED000_KEY_MANAGEMENT],
    "001": [
        SEED001_QUICKSTART,
        SEED001_EXEC,
        SEED001_WRITE,
        SEED001_UPLOAD,
        SEED001_DELETE,
        SEED001_EXEC_CHAIN,
        SEED001_INIT_SH,
        SEED001_INIT_MANAGE,
        SEED001_BOOTSTRAP,
        SEED001_MULTI_TENANCY,
        SEED001_MANAGE_KEYS,
        SEED001_REVOKE_ON_CHURN,
        SEED001_SESSIONS,
    ],
}

_CONSTRUCTOR = re.compile(r"\b(TroveClient|AsyncTroveClient|TroveAdminClient)\(")


def adapt(source: str, server: LiveServer, **placeholders: str) -> str:
    """The snippet with real credentials and ``base_url=BASE_URL`` (the only edits)."""
    values = {
        '"trove-sk-admin-..."': server.admin_key,
        '"trove-sk-..."': server.workspace_key,
        '"ws-..."': server.workspace_id,
        **{f'"{k}"': v for k, v in placeholders.items()},
    }
    for placeholder, value in values.items():
        source = source.replace(placeholder, repr(value))
    return _CONSTRUCTOR.sub(r"\1(base_url=BASE_URL, ", source)


def compile_snippet(source: str, server: LiveServer, **placeholders: str) -> Any:
    return compile(
        adapt(source, server, **placeholders), "<seed snippet>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )


def run(
    source: str, server: LiveServer, names: dict[str, Any] | None = None, **placeholders: str
) -> dict[str, Any]:
    """Run a synchronous snippet; returns its globals."""
    scope: dict[str, Any] = {"__name__": "seed_snippet", "BASE_URL": server.base_url, **(names or {})}
    exec(compile_snippet(source, server, **placeholders), scope)
    return scope


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ── fixtures ─────────────────────────────────────────────────────────────────


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd holding the local files the snippets open."""
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(64))
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4\n" + secrets.token_bytes(200) + b"\n%%EOF\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class ApiStandIn:
    """A local HTTP server standing in for https://api.example.com.

    ``script``, when set, is that server as a Python program to run inside the sandbox, with
    ``prelude`` the init.sh lines that start it on first use (``base`` then asks them the port).
    """

    base: str
    token: str
    feed: bytes
    script: str = ""
    prelude: str = ""


_STANDIN_SCRIPT = """
import http.server, os
TOKEN, FEED = {token!r}, {feed!r}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/token":
            status, body = 200, TOKEN.encode()
        elif self.path == "/feed" and self.headers.get("Authorization") == TOKEN:
            status, body = 200, FEED
        else:
            status, body = 401, b"unauthorized\\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open("/tmp/standin.port.tmp", "w") as out:
    out.write(str(httpd.server_address[1]))
os.rename("/tmp/standin.port.tmp", "/tmp/standin.port")
httpd.serve_forever()
"""
# Started once per exec (its processes end with it; /tmp stays while the sandbox is warm, so
# init.sh drops the last exec's port file); a subshell's start is seen by the next call through
# the port file.
_STANDIN_PRELUDE = """rm -f /tmp/standin.port
standin_port() {
  local tries=0
  if [ ! -s /tmp/standin.port ]; then
    (python3 /workspace/.standin.py </dev/null >/dev/null 2>&1 &)
    while [ ! -s /tmp/standin.port ] && [ $((tries += 1)) -lt 500 ]; do sleep 0.02; done
  fi
  cat /tmp/standin.port
}
"""


@pytest.fixture
def api_example() -> Iterator[ApiStandIn]:
    token = "tok-" + secrets.token_hex(8)
    feed = b'{"items": [1, 2, 3]}\n'
    if backend() == "local":
        # Local sandboxes have a network of their own that refuses the host's loopback and
        # addresses (TROVE_SANDBOX_NETWORK=outbound): the stand-in runs inside the sandbox.
        script = _STANDIN_SCRIPT.format(token=token, feed=feed)
        yield ApiStandIn("http://127.0.0.1:$(standin_port)", token, feed, script, _STANDIN_PRELUDE)
        return

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/token":
                status, body = 200, token.encode()
            elif self.path == "/feed" and self.headers.get("Authorization") == token:
                status, body = 200, feed
            else:
                status, body = 401, b"unauthorized\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # Pods reach the runner through the CNI bridge's gateway.
    httpd = ThreadingHTTPServer((sandbox_host(), 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield ApiStandIn(base=f"http://{sandbox_host()}:{httpd.server_address[1]}", token=token, feed=feed)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# ── seed 000 ─────────────────────────────────────────────────────────────────


def test_seed000_filesystem_operations(server: LiveServer, in_tmp_cwd: Path) -> None:
    scope = run(SEED000_FILESYSTEM, server)
    assert "data" in scope["output"].split()
    with client(server, "alice") as check:
        assert check.read_bytes("workspace/data/image.png") == (in_tmp_cwd / "image.png").read_bytes()
        with pytest.raises(TroveNotFoundError):
            check.read_text("workspace/data/notes.txt")


async def test_seed000_async(server: LiveServer) -> None:
    scope: dict[str, Any] = {"__name__": "seed_snippet", "BASE_URL": server.base_url}
    await eval(compile_snippet(SEED000_ASYNC, server), scope)
    with client(server, "alice") as check:
        assert check.read_text("workspace/hello.txt") == "hi"


def test_seed000_key_management(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    scope = run(SEED000_KEY_MANAGEMENT, server)
    key = scope["key"]
    assert capsys.readouterr().out == key.api_key + "\n"
    assert key.key_id in {k.key_id for k in scope["keys"]}
    with admin(server) as check:
        assert key.key_id not in {k.key_id for k in check.list_keys()}
    with client(server, "alice", key.api_key) as revoked, pytest.raises(TroveAuthError) as caught:
        revoked.exec("true")
    assert caught.value.status_code == 401


# ── seed 001 ─────────────────────────────────────────────────────────────────


def test_seed001_quickstart(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    scope = run(SEED001_QUICKSTART, server)
    scope["client"].close()
    assert "notes.md" in capsys.readouterr().out
    with client(server, "my-agent") as check:
        assert check.read_text("workspace/notes.md") == "# Notes"


def test_seed001_exec(trove: TroveClient, server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    trove.write("workspace/src/app.py", "x = 1  # TODO: rename\n")
    scope = run(SEED001_EXEC, server, {"client": trove})
    out = capsys.readouterr().out
    assert "workspace/src/app.py:x = 1  # TODO: rename" in out
    # No pytest in the namespace: the detailed call reports the failure instead of raising.
    assert scope["result"].exit_code != 0
    assert "failures on stderr:" in out


def test_seed001_write_upload_delete(
    trove: TroveClient, server: LiveServer, in_tmp_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {"client": trove}
    run(SEED001_WRITE, server, names)
    assert capsys.readouterr().out == "workspace/notes.md 11\n"
    assert trove.read_text("workspace/notes.md") == "# Notes\n..."
    pdf = (in_tmp_cwd / "report.pdf").read_bytes()
    run(SEED001_UPLOAD, server, names)
    assert capsys.readouterr().out == f"{len(pdf)}\n"
    assert trove.read_bytes("workspace/report.pdf") == pdf
    run(SEED001_DELETE, server, names)
    assert [e.path for e in trove.list_dir()] == ["workspace/report.pdf"]


def test_seed001_exec_chain(trove: TroveClient, server: LiveServer, api_example: ApiStandIn) -> None:
    # The stand-in for api.example.com is reached through a curl wrapper in init.sh (a file the
    # snippet's namespace holds), so the snippet's commands and URLs stay exactly as printed.
    # The page elides the second call's URL as "..."; the wrapper maps that to the feed too.
    trove.exec("mkdir -p workspace/data")
    if api_example.script:
        trove.write("workspace/.standin.py", api_example.script)
    trove.set_init(
        api_example.prelude + "curl() {\n"
        "  local a args=()\n"
        '  for a in "$@"; do\n'
        '    case "$a" in\n'
        f'      https://api.example.com/*) a="{api_example.base}/${{a#https://api.example.com/}}" ;;\n'
        f'      ...) a="{api_example.base}/feed" ;;\n'
        "    esac\n"
        '    args+=("$a")\n'
        "  done\n"
        '  command curl "${args[@]}"\n'
        "}\n"
    )
    scope = run(SEED001_EXEC_CHAIN, server, {"client": trove})
    assert scope["result"].exit_code == 0, scope["result"]
    # The token only reaches the feed call if TOKEN survived within the chain.
    assert trove.read_bytes("workspace/data/feed.json") == api_example.feed
    assert trove.read_text("workspace/.token") == api_example.token
    assert trove.read_bytes("workspace/feed.json") == api_example.feed


def _make_venv_project(trove: TroveClient) -> None:
    """workspace/data with a real venv, analyze.py, tests/, and a pytest stand-in in the venv."""
    trove.exec("mkdir -p workspace/data/tests && python3 -m venv --without-pip workspace/data/.venv")
    record = (
        "import os, sys\n"
        "with open('runs.log', 'a') as log:\n"
        "    log.write(f'{tag} {os.getcwd()} {sys.prefix}\\n')\n"
    )
    trove.write("workspace/data/analyze.py", "tag = 'analyze'\n" + record)
    trove.write(
        "workspace/data/tests/test_ok.py",
        "import unittest\n\n\nclass T(unittest.TestCase):\n"
        "    def test_ok(self):\n        self.assertTrue(True)\n",
    )
    # The sandbox has no package index, so "pytest" is a stand-in in the venv: unittest discovery.
    trove.write(
        "workspace/data/.venv/bin/pytest",
        "#!/usr/bin/env python\n"
        "import sys, unittest\n"
        "tag = 'pytest'\n"
        + record
        + "suite = unittest.defaultTestLoader.discover(sys.argv[1] if len(sys.argv) > 1 else 'tests')\n"
        "sys.exit(0 if unittest.TextTestRunner().run(suite).wasSuccessful() else 1)\n",
    )
    trove.exec("chmod +x workspace/data/.venv/bin/pytest")


def test_seed001_init_sh(trove: TroveClient, server: LiveServer) -> None:
    _make_venv_project(trove)
    run(SEED001_INIT_SH, server, {"client": trove})
    runs = [line.split() for line in trove.read_text("workspace/data/runs.log").splitlines()]
    assert [tag for tag, _, _ in runs] == ["analyze", "pytest", "analyze", "pytest"]
    for _, cwd, prefix in runs:
        assert cwd.endswith("workspace/data")
        assert prefix.endswith("workspace/data/.venv")
    assert trove.get_init() == "\ncd workspace/data\nsource .venv/bin/activate\n"


def test_seed001_init_manage(trove: TroveClient, server: LiveServer) -> None:
    trove.exec("mkdir -p workspace/data")
    run(SEED001_INIT_MANAGE, server, {"client": trove})
    # set, read back, then cleared: nothing is left (the return values are in test_files.py).
    assert trove.get_init() is None
    assert trove.clear_init() is False


def test_seed001_bootstrap(trove: TroveClient, server: LiveServer) -> None:
    trove.write("workspace/data.csv", "a,b\n" * 10)
    trove.write("workspace/report.md", "# Report\n")
    trove.exec("mkdir -p workspace/data")
    trove.set_init("cd workspace/data\nsource .venv/bin/activate\n")
    scope = run(SEED001_BOOTSTRAP, server, {"client": trove, "system_prompt": "You are a careful agent.\n"})
    prompt = scope["system_prompt"]
    assert prompt.startswith("You are a careful agent.\n<workspace>\n")
    assert scope["bs"].file_count == 2
    assert "init.sh: cd workspace/data; source .venv/bin/activate" in prompt
    assert "  last_session: |\n    ## What I learned\n    - Salesforce OAuth needs the 'api' scope" in prompt
    assert "workspace/.trove" not in prompt
    assert prompt.endswith("</workspace>")


def test_seed001_multi_tenancy(server: LiveServer) -> None:
    customer_id = secrets.token_hex(4)
    signup, agent, churn = re.split(r"\n(?=# ── )", SEED001_MULTI_TENANCY.split("\n", 1)[1])[1:]
    header = "from trove_sdk import TroveAdminClient, TroveClient\n"
    scope = run(
        header + signup,
        server,
        {
            "TROVE_ADMIN_KEY": server.admin_key,
            "TROVE_WORKSPACE_ID": server.workspace_id,
            "customer_id": customer_id,
        },
    )
    # "Store key.key_id in your DB"; "Give key.api_key to the backend service".
    scope["stored_key_id"] = scope["key"].key_id
    scope["customer_key"] = scope["key"].api_key
    exec(compile_snippet(agent, server), scope)
    trove = scope["trove"]
    assert trove.read_text("workspace/memory/prefs.md") == "prefers bullet points"
    with client(server, f"customer-{customer_id}-other", scope["customer_key"]) as other:
        with pytest.raises(TroveAuthError) as caught:
            other.exec("true")
        assert caught.value.status_code == 403
    exec(compile_snippet(churn, server), scope)
    with pytest.raises(TroveAuthError) as caught:
        trove.exec("cat workspace/memory/prefs.md")
    assert caught.value.status_code == 401
    trove.close()
    scope["admin"].close()


def test_seed001_multi_tenancy_split_covers_the_whole_snippet() -> None:
    parts = re.split(r"\n(?=# ── )", SEED001_MULTI_TENANCY.split("\n", 1)[1])
    assert len(parts) == 4
    assert _squash("\n".join(parts)) == _squash(SEED001_MULTI_TENANCY)


def test_seed001_manage_keys_and_revoke_on_churn(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scope = run(SEED001_MANAGE_KEYS, server)
    key = scope["key"]
    assert (key.namespace, key.name) == ("customer-acme", "customer-acme")
    assert capsys.readouterr().out == key.api_key + "\n"
    run(SEED001_REVOKE_ON_CHURN, server, {"admin": scope["admin"]}, **{"key-...": key.key_id})
    scope["admin"].close()
    with client(server, "customer-acme", key.api_key) as revoked, pytest.raises(TroveAuthError) as caught:
        revoked.exec("true")
    assert caught.value.status_code == 401


def test_seed001_per_session_sandboxes(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_ADMIN_KEY", server.admin_key)
    monkeypatch.setenv("TROVE_WORKSPACE_ID", server.workspace_id)
    provision = run(SEED001_SESSIONS, server)
    one = provision["start_session"](secrets.token_hex(4))
    two = provision["start_session"](secrets.token_hex(4))
    assert one["namespace"].startswith("session-")
    with client(server, one["namespace"], one["api_key"]) as agent_one:
        agent_one.write("workspace/state.json", "{}")
        # Cross-namespace requests return 403.
        with (
            client(server, two["namespace"], one["api_key"]) as trespass,
            pytest.raises(TroveAuthError) as caught,
        ):
            trespass.list_dir()
        assert caught.value.status_code == 403
        # The unlocked workspace key (backend ops jobs) walks every namespace.
        with client(server, one["namespace"]) as ops:
            assert [e.name for e in ops.list_dir()] == ["state.json"]
        # The admin key cannot touch the filesystem.
        with client(server, one["namespace"], server.admin_key) as admin_fs, pytest.raises(TroveAuthError):
            admin_fs.list_dir()
        provision["end_session"](one["key_id"])
        with pytest.raises(TroveAuthError) as caught:
            agent_one.list_dir()
        assert caught.value.status_code == 401
    provision["end_session"](two["key_id"])
    provision["admin"].close()


# ── audit ────────────────────────────────────────────────────────────────────


@pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason="the seed pages are not on this machine")
@pytest.mark.parametrize("seed", sorted(SNIPPETS))
def test_snippets_are_verbatim_copies_of_the_seeds(seed: str) -> None:
    [page] = SEEDS_DIR.glob(f"{seed}_*.txt")
    text = _squash(page.read_text())
    for snippet in SNIPPETS[seed]:
        assert _squash(snippet) in text, snippet


def test_adapt_only_touches_credentials_and_base_url(server: LiveServer) -> None:
    for snippets in SNIPPETS.values():
        for snippet in snippets:
            adapted = adapt(snippet, server, **{"key-...": "key-x"})
            undone = adapted.replace("base_url=BASE_URL, ", "")
            for value, placeholder in (
                (server.admin_key, '"trove-sk-admin-..."'),
                (server.workspace_key, '"trove-sk-..."'),
                (server.workspace_id, '"ws-..."'),
                ("key-x", '"key-..."'),
            ):
                undone = undone.replace(repr(value), placeholder)
            assert undone == snippet
