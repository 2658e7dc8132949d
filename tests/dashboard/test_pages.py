"""The dashboard's pages in a real browser, with the official trove-sdk on the other side."""

from __future__ import annotations

import os
import re
import secrets
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.dashboard.conftest import sign_in
from tests.support.sdk import client
from tests.support.server import LiveServer

Shoot = Callable[[Page, str], Path]

EXPECTED_STATE = "Ready" if os.environ.get("TROVE_TEST_BACKEND") == "kubernetes" else "local"


def _png(width: int, height: int) -> bytes:
    """A solid red RGB PNG, built by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png(2, 2)


def test_sign_in_lands_on_the_overview(fresh_page: Page, server: LiveServer, shoot: Shoot) -> None:
    fresh_page.goto(f"{server.base_url}/dashboard/keys")
    expect(fresh_page).to_have_url(re.compile(r"/dashboard/login\?next=/dashboard/keys$"))
    shoot(fresh_page, "login")
    fresh_page.get_by_label("API key").fill(server.admin_key)
    fresh_page.get_by_role("button", name="Sign in").click()
    expect(fresh_page).to_have_url(f"{server.base_url}/dashboard/keys")
    fresh_page.get_by_role("link", name="Overview").click()
    expect(fresh_page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(fresh_page.locator("svg.chart").first).to_be_visible()
    shoot(fresh_page, "overview")


def test_a_namespace_made_by_the_sdk_is_listed_and_browsable(
    admin_page: Page, server: LiveServer, namespace: str, shoot: Shoot
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/notes/todo.md", "# todo\n- ship the dashboard\n")
        sdk.exec("echo from-the-sdk")
    admin_page.goto(f"{server.base_url}/dashboard/namespaces")
    admin_page.get_by_label("Search by name").fill(namespace)  # htmx narrows the table as one types
    row = admin_page.locator("#rows tbody tr", has_text=namespace)
    expect(row).to_have_count(1)
    expect(admin_page.locator("#rows tbody tr")).to_have_count(1)
    expect(row.locator("td")).to_have_text([namespace, "1", "28 B", re.compile(r"\d{4}-"), EXPECTED_STATE])
    shoot(admin_page, "namespaces")
    row.get_by_role("link", name=namespace).click()
    expect(admin_page.get_by_role("heading", name=f"Namespace {namespace}")).to_be_visible()
    # The backend's own word: the TroveNamespace phase on Kubernetes.
    expect(admin_page.locator("#state")).to_have_text(EXPECTED_STATE)
    admin_page.get_by_text("Whole tree").click()  # a disclosure: every folder and file, nested
    tree = admin_page.get_by_role("navigation", name="Whole tree")
    expect(
        tree.get_by_role("listitem").filter(has_text="notes/").get_by_role("link", name="todo.md")
    ).to_be_visible()
    admin_page.get_by_role("link", name="notes/", exact=True).first.click()
    admin_page.locator("table.tree").get_by_role("link", name="todo.md", exact=True).click()
    expect(admin_page.locator("#preview pre")).to_contain_text("ship the dashboard")
    execs = admin_page.locator("#execs tbody tr", has_text="echo from-the-sdk")
    expect(execs).to_contain_text("from-the-sdk")
    expect(execs).to_contain_text("0")
    shoot(admin_page, "namespace")


def test_upload_with_progress_then_preview(
    admin_page: Page, server: LiveServer, namespace: str, tmp_path: Path, shoot: Shoot
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/readme.txt", "exists")
    text = tmp_path / "uploaded.txt"
    text.write_text("uploaded through the browser\n")
    image = tmp_path / "dot.png"
    image.write_bytes(PNG)
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    admin_page.get_by_label("Upload to workspace/").set_input_files(str(text))
    admin_page.get_by_role("button", name="Upload", exact=True).click()
    expect(admin_page.locator("#preview pre")).to_contain_text("uploaded through the browser")
    with client(server, namespace) as sdk:
        assert sdk.read_text("workspace/uploaded.txt") == "uploaded through the browser\n"
    admin_page.get_by_label("Upload to workspace/").set_input_files(str(image))
    admin_page.get_by_role("button", name="Upload", exact=True).click()
    picture = admin_page.get_by_role("img", name="Preview of workspace/dot.png")
    expect(picture).to_be_visible()
    assert picture.evaluate("img => img.naturalWidth") == 2
    shoot(admin_page, "preview-image")
    with client(server, namespace) as sdk:
        assert sdk.read_bytes("workspace/dot.png") == PNG


def test_delete_asks_first_and_goes_through_the_service(
    admin_page: Page, server: LiveServer, namespace: str
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/gone.txt", "bye")
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    admin_page.get_by_role("button", name="Delete gone.txt").click()  # the dialog is accepted
    expect(admin_page.locator("#flash")).to_have_text("Deleted.")
    with client(server, namespace) as sdk:
        assert [e.path for e in sdk.list_dir()] == []
    admin_page.goto(f"{server.base_url}/dashboard/events?types=file.deleted&namespace={namespace}")
    row = admin_page.locator("#events tbody tr", has_text="workspace/gone.txt")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(3)).to_have_text("admin")  # the audit actor: the signed-in key


def test_an_sdk_event_arrives_live_and_waits_while_paused(
    admin_page: Page, server: LiveServer, namespace: str, shoot: Shoot
) -> None:
    admin_page.goto(f"{server.base_url}/dashboard/events?namespace={namespace}")
    status = admin_page.locator("#stream-status")
    expect(status).to_have_text("live")
    rows = admin_page.locator("#events tbody tr")
    with client(server, namespace) as sdk:
        sdk.write("workspace/live.txt", "now")
    first = admin_page.locator("#events tbody tr", has_text="workspace/live.txt")
    expect(first).to_contain_text("file.written")
    expect(first).to_contain_text(namespace)
    admin_page.get_by_role("button", name="Pause").click()
    with client(server, namespace) as sdk:
        sdk.write("workspace/while-paused.txt", "later")
    expect(status).to_have_text("paused: 1 waiting")
    expect(rows.filter(has_text="while-paused.txt")).to_have_count(0)
    admin_page.get_by_role("button", name="Resume").click()
    expect(rows.filter(has_text="while-paused.txt")).to_have_count(1)
    shoot(admin_page, "events")


def test_snapshot_taken_and_restored_from_the_page(
    admin_page: Page, server: LiveServer, namespace: str, shoot: Shoot
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/state.txt", "v1")
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    admin_page.get_by_label("Label (optional)").fill("before-v2")
    admin_page.get_by_role("button", name="Take a snapshot").click()
    expect(admin_page.locator("#flash")).to_have_text("Snapshot taken.")
    row = admin_page.locator("#snapshots tbody tr", has_text="before-v2")
    expect(row).to_have_count(1)
    with client(server, namespace) as sdk:
        sdk.write("workspace/state.txt", "v2")
        sdk.write("workspace/extra.txt", "new")
    shoot(admin_page, "snapshots")
    row.get_by_role("button", name="Restore").click()  # confirmed in the dialog
    expect(admin_page.locator("#flash")).to_have_text("Snapshot restored.")
    with client(server, namespace) as sdk:
        assert sdk.read_text("workspace/state.txt") == "v1"
        assert sorted(e.path for e in sdk.list_dir()) == ["workspace/state.txt"]
        assert [s.label for s in sdk.list_snapshots()] == ["before-v2"]


def test_init_sh_is_edited_with_unix_line_endings(
    admin_page: Page, server: LiveServer, namespace: str
) -> None:
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    admin_page.get_by_label("workspace/.trove/init.sh").fill("export GREETING=hello\nexport OTHER=x\n")
    admin_page.get_by_role("button", name="Save init.sh").click()
    expect(admin_page.locator("#flash")).to_have_text("Saved.")
    with client(server, namespace) as sdk:
        assert sdk.exec("echo $GREETING-$OTHER").strip() == "hello-x"


def test_a_workspace_key_gets_the_reduced_view(
    fresh_page: Page, server: LiveServer, namespace: str, shoot: Shoot
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/mine.txt", "mine")
    sign_in(fresh_page, server.base_url, server.workspace_key)
    expect(fresh_page).to_have_url(f"{server.base_url}/dashboard/namespaces")
    nav = fresh_page.get_by_role("navigation", name="Dashboard")
    expect(nav.get_by_role("link")).to_have_text(["Namespaces", "Live events"])
    fresh_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    expect(fresh_page.locator("table.tree")).to_contain_text("mine.txt")
    for admin_only in ("keys", "webhooks"):
        answer = fresh_page.goto(f"{server.base_url}/dashboard/{admin_only}")
        assert answer is not None
        assert answer.status == 403
        expect(fresh_page.locator("main")).to_contain_text("admin_required")
    shoot(fresh_page, "workspace-key-refused")


def test_a_locked_key_sees_only_its_namespace(
    fresh_page: Page, server: LiveServer, namespace: str, mint_locked: Callable[[str], str]
) -> None:
    other = "t-" + secrets.token_hex(6)
    with client(server, namespace) as sdk:
        sdk.write("workspace/a.txt", "a")
    with client(server, other) as sdk:
        sdk.write("workspace/b.txt", "b")
    sign_in(fresh_page, server.base_url, mint_locked(namespace))
    fresh_page.goto(f"{server.base_url}/dashboard/namespaces")
    expect(fresh_page.locator("#rows tbody tr")).to_have_count(1)
    expect(fresh_page.locator("#rows tbody")).to_contain_text(namespace)
    answer = fresh_page.goto(f"{server.base_url}/dashboard/namespaces/{other}")
    assert answer is not None
    assert answer.status == 403
    expect(fresh_page.locator("main")).to_contain_text("namespace_forbidden")


def test_namespaces_search_and_paging(admin_page: Page, server: LiveServer) -> None:
    prefix = "pg-" + secrets.token_hex(4)
    names = [f"{prefix}-{i}" for i in range(3)]
    for name in names:
        with client(server, name) as sdk:
            sdk.write("workspace/f.txt", "x")
    admin_page.goto(f"{server.base_url}/dashboard/namespaces?q={prefix}&per=2")
    expect(admin_page.locator("#rows")).to_contain_text("3 namespaces matching")
    expect(admin_page.locator("#rows tbody tr")).to_have_count(2)
    expect(admin_page.locator("#rows tbody")).to_contain_text(names[0])
    expect(admin_page.locator("#rows tbody")).to_contain_text(names[1])
    admin_page.get_by_role("link", name="Next →").click()
    expect(admin_page.locator("#rows tbody tr")).to_have_count(1)
    expect(admin_page.locator("#rows tbody tr")).to_contain_text(names[2])
    expect(admin_page.locator("#rows tbody tr")).to_contain_text("1")  # one file
    admin_page.get_by_role("link", name="← Previous").click()
    expect(admin_page.locator("#rows tbody tr")).to_have_count(2)


def test_keyboard_labels_and_dark_mode(
    browser: Browser, admin_state: str, server: LiveServer, shoot: Shoot
) -> None:
    context = browser.new_context(storage_state=admin_state, color_scheme="dark")
    page = context.new_page()
    for path in (
        "/dashboard",
        "/dashboard/namespaces",
        "/dashboard/events",
        "/dashboard/keys",
        "/dashboard/webhooks",
    ):
        page.goto(server.base_url + path)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], path
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"  # the dark palette follows the system preference
    shoot(page, "webhooks-dark")
    context.close()


def test_hostile_names_and_contents_stay_text(admin_page: Page, server: LiveServer, namespace: str) -> None:
    """File names, contents, commands and event data are shown, never run."""
    hostile = '<img src=x onerror="document.title=1">'
    with client(server, namespace) as sdk:
        sdk.write(f"workspace/{hostile}.txt", hostile)
        sdk.exec(f"echo '{hostile}'")
    fired: list[str] = []
    admin_page.on("dialog", lambda dialog: fired.append(dialog.message))
    admin_page.goto(f"{server.base_url}/dashboard/namespaces/{namespace}")
    admin_page.get_by_role("link", name=f"{hostile}.txt", exact=True).click()
    expect(admin_page.locator("#preview pre")).to_have_text(hostile)
    expect(admin_page.locator("#execs tbody tr").first).to_contain_text(hostile)
    assert admin_page.locator("main img").count() == 0
    admin_page.goto(f"{server.base_url}/dashboard/events?namespace={namespace}")
    expect(admin_page.locator("#stream-status")).to_have_text("live")
    with client(server, namespace) as sdk:
        sdk.write("workspace/again.txt", hostile)
    expect(admin_page.locator("#events tbody tr", has_text="again.txt")).to_have_count(1)
    assert admin_page.locator("img").count() == 0
    assert admin_page.title() != "1"
    assert fired == []
