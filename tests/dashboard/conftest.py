"""Dashboard tests in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser), one browser per session, a fresh context (cookies) per test, against the same live
server the contract suite uses (so `make e2e` runs them on the Kubernetes backend too).

Screenshots of every page land in ``$TROVE_TEST_SCREENSHOTS`` (default: a directory under
pytest's basetemp); `.ci/run` keeps them."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.support.sdk import admin
from tests.support.server import LiveServer

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    configured = os.environ.get("TROVE_TEST_CHROMIUM")
    if configured:
        return configured
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


# Package scope: the sync API runs an event loop in this thread while it is open, and tests
# after this package (asyncio.run in tests/storage) must not find one running.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        missing = "no chromium: apt-get install chromium (make system-deps), or set TROVE_TEST_CHROMIUM"
        if os.environ.get("TROVE_BROWSER_REQUIRED") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    # --no-sandbox: chromium's own sandbox cannot start as root (CI runs as root).
    launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("TROVE_TEST_SCREENSHOTS")
    if not configured:
        return tmp_path_factory.mktemp("screenshots")  # pytest keeps the last few runs'
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def shoot(screenshot_dir: Path, request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """Save a full-page screenshot named after the test and the page."""

    def save(page: Page, name: str) -> Path:
        test = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
        target = screenshot_dir / f"{test}--{name}.png"
        page.screenshot(path=str(target), full_page=True)
        return target

    return save


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    return context


def sign_in(page: Page, base_url: str, api_key: str) -> None:
    """Through the sign-in form, as a person would."""
    page.goto(f"{base_url}/dashboard/login")
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/dashboard(/namespaces)?$"))


@pytest.fixture(scope="package")
def admin_state(browser: Browser, server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sign-in per session; each test starts from its cookies (fast, and still real)."""
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, server.base_url, server.admin_key)
    state = str(tmp_path_factory.mktemp("dashboard") / "admin.json")
    context.storage_state(path=state)
    context.close()
    return state


@pytest.fixture
def admin_page(browser: Browser, admin_state: str) -> Iterator[Page]:
    """A page signed in with the workspace's admin key. Confirmation dialogs are accepted."""
    context = browser.new_context(storage_state=admin_state, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


@pytest.fixture
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page with no cookies at all."""
    context = new_context(browser)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


@pytest.fixture
def mint_locked(server: LiveServer) -> Callable[[str], str]:
    """A workspace key locked to one namespace, minted through the official admin client."""

    def mint(namespace: str) -> str:
        with admin(server) as adm:
            return adm.create_key(f"locked-{namespace}", namespace=namespace).api_key

    return mint
