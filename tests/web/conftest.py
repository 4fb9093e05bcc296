"""Web fixtures: the app on the test database, signed-in clients, a live server for Chromium."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.orm as so
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from followup.accounts.service import create_user
from followup.app import create_app
from followup.runtime import Runtime

PASSWORD = "correct horse battery"
NURSE = "nurse@example.org"
ADMIN = "admin@example.org"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def staff(session: so.Session, runtime: Runtime) -> dict[str, int]:
    """A nurse and an admin, both with PASSWORD."""
    ids = {}
    for email, role in ((NURSE, "nurse"), (ADMIN, "admin")):
        user = create_user(
            session=session,
            email=email,
            role=role,
            password=PASSWORD,
            now=runtime.clock.now(),
            actor="test",
        )
        ids[role] = user.id
    session.commit()
    return ids


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    return create_app(runtime.settings, runtime=runtime)


def csrf_from(response: TestResponse) -> str:
    """The CSRF token in a page's form."""
    match = _CSRF_RE.search(response.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return match.group(1)


class Browser:
    """A test client that signs in and posts forms with their CSRF token, like a browser."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.client.get(url, **kwargs)

    def post(
        self, url: str, data: dict[str, Any], *, form_page: str = "/patients/new"
    ) -> TestResponse:
        token = csrf_from(self.client.get(form_page))
        return self.client.post(url, data={"csrf_token": token, **data})

    def sign_in(self, email: str, password: str = PASSWORD) -> TestResponse:
        token = csrf_from(self.client.get("/login"))
        return self.client.post(
            "/login", data={"csrf_token": token, "email": email, "password": password}
        )


@pytest.fixture
def browser(app: Flask) -> Iterator[Browser]:
    with app.test_client() as client:
        yield Browser(client)


@pytest.fixture
def signed_in(app: Flask, staff: dict[str, int]) -> Callable[[str], Browser]:
    """A factory of signed-in clients: signed_in(NURSE) or signed_in(ADMIN)."""

    def _signed_in(email: str) -> Browser:
        browser = Browser(app.test_client())
        response = browser.sign_in(email)
        assert response.status_code == 302, response.get_data(as_text=True)
        return browser

    return _signed_in


# --- a live server and Chromium, for the browser tests ---------------------------------------

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(reason: str) -> None:
    """Skip locally; fail where a browser is required (CI sets REQUIRE_BROWSER=1)."""
    if REQUIRE_BROWSER:
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the whole session."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (make install-dev)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script, installed from the npm registry by `npm ci` (package.json)."""
    if not AXE.exists():
        _missing(f"{AXE.relative_to(ROOT)} is missing (npm ci)")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The real app served on 127.0.0.1 by a werkzeug server thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def page(chromium: Any, live_server: str) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 375 px wide, a phone's width."""
    context = chromium.new_context(base_url=live_server, viewport={"width": 375, "height": 812})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
