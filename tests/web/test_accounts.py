"""Sign-in, CSRF, roles and sign-out through Flask's test client.

Throttling and sessions have their own files (test_sign_in_throttle.py, test_sessions.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.accounts.models import User
from followup.accounts.service import (
    FIRST_ADMIN_EMAIL,
    ONE_TIME_PREFIX,
    SIGN_IN_FAILED,
    ensure_first_admin,
)
from followup.app import create_app
from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.runtime import Runtime
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser, csrf_from


def actions(session: so.Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.mark.parametrize("path", ["/", "/patients", "/patients/new", "/patients/1", "/audit"])
def test_pages_send_anonymous_visitors_to_sign_in(browser: Browser, path: str) -> None:
    response = browser.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_login_health_and_twilio_webhooks_need_no_sign_in(browser: Browser) -> None:
    assert browser.get("/login").status_code == 200
    assert browser.get("/healthz").status_code == 200
    # No CSRF token and no session: refused by the Twilio signature check (403), not by
    # the sign-in gate (302) or CSRF (400).
    response = browser.client.post("/twilio/status", data={"MessageSid": "SM1"})
    assert response.status_code == 403


def test_sign_in_then_sign_out(
    browser: Browser, staff: dict[str, int], session: so.Session
) -> None:
    response = browser.sign_in(NURSE)
    assert response.status_code == 302 and response.headers["Location"] == "/patients"
    assert browser.get("/patients").status_code == 200
    response = browser.post("/logout", {}, form_page="/patients")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert browser.get("/patients").status_code == 302
    assert actions(session) == ["user.created", "user.created", "user.signed_in", "user.signed_out"]


def test_session_cookie_is_httponly_and_samesite(browser: Browser, staff: dict[str, int]) -> None:
    response = browser.sign_in(NURSE)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development runs on plain http://127.0.0.1


def test_session_cookie_is_secure_in_production(runtime: Runtime, staff: dict[str, int]) -> None:
    runtime.settings = replace(
        runtime.settings, environment="production", secret_key="a-real-secret-key-for-tests"
    )
    app = create_app(runtime.settings, runtime=runtime)
    browser = Browser(app.test_client())
    cookie = browser.sign_in(NURSE).headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_a_wrong_password_is_refused_with_one_message(
    browser: Browser, staff: dict[str, int]
) -> None:
    for email in (NURSE, "nobody@example.org"):
        response = browser.sign_in(email, "wrong password!")
        assert response.status_code == 401
        assert SIGN_IN_FAILED in response.get_data(as_text=True)


def test_forms_without_the_csrf_token_are_refused(
    signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    browser = signed_in(NURSE)
    response = browser.client.post(
        "/patients/new",
        data={"first_name": "Ada", "last_name": "Moreno", "action": "enroll"},
    )
    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)
    response = browser.client.post("/logout")
    assert response.status_code == 400
    assert browser.get("/patients").status_code == 200  # still signed in


def test_sign_in_without_the_csrf_token_is_refused(browser: Browser, staff: dict[str, int]) -> None:
    response = browser.client.post("/login", data={"email": NURSE, "password": PASSWORD})
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/audit", "/users", "/log", "/log.csv", "/audit/anything"])
def test_a_nurse_gets_403_on_admin_pages(signed_in: Callable[[str], Browser], path: str) -> None:
    response = signed_in(NURSE).get(path)
    assert response.status_code == 403
    assert "for admins only" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/audit", "/users"])
def test_an_admin_reaches_admin_pages(signed_in: Callable[[str], Browser], path: str) -> None:
    assert signed_in(ADMIN).get(path).status_code == 200


def test_an_admin_creates_a_nurse_account(
    signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    browser = signed_in(ADMIN)
    response = browser.post(
        "/users",
        {"email": "new@example.org", "role": "nurse", "password": "short"},
        form_page="/users",
    )
    assert response.status_code == 422
    assert "at least 12 characters" in response.get_data(as_text=True)
    response = browser.post(
        "/users",
        {"email": "new@example.org", "role": "nurse", "password": "amber kettle orbit"},
        form_page="/users",
    )
    assert response.status_code == 302
    assert (
        Browser(browser.client.application.test_client())
        .sign_in("new@example.org", "amber kettle orbit")
        .status_code
        == 302
    )


def test_next_only_redirects_within_the_site(browser: Browser, staff: dict[str, int]) -> None:
    token = csrf_from(browser.get("/login"))
    data = {"csrf_token": token, "email": NURSE, "password": PASSWORD}
    response = browser.client.post("/login?next=https://evil.example/", data=data)
    assert response.headers["Location"] == "/patients"
    browser.client.post("/logout", data={"csrf_token": csrf_from(browser.get("/patients"))})
    token = csrf_from(browser.get("/login"))
    response = browser.client.post("/login?next=/audit", data={**data, "csrf_token": token})
    assert response.headers["Location"] == "/audit"


def test_the_first_admin_must_replace_the_one_time_password(
    app: Flask, session: so.Session, clock: FakeClock
) -> None:
    created = ensure_first_admin(session=session, now=clock.now())
    session.commit()
    assert created is not None
    user, password = created
    assert user.email == FIRST_ADMIN_EMAIL and user.role == "admin"
    assert password.startswith(ONE_TIME_PREFIX)
    assert ensure_first_admin(session=session, now=clock.now()) is None  # only once

    browser = Browser(app.test_client())
    response = browser.sign_in(FIRST_ADMIN_EMAIL, password)
    assert response.headers["Location"] == "/account/password"
    assert browser.get("/patients").headers["Location"] == "/account/password"
    assert browser.get("/audit").headers["Location"] == "/account/password"

    token = csrf_from(browser.get("/account/password"))
    form = {"csrf_token": token, "current_password": password}
    response = browser.client.post(
        "/account/password",
        data={**form, "new_password": ONE_TIME_PREFIX + "mine-now-1234", "confirm_password": ""},
    )
    assert response.status_code == 422
    response = browser.client.post(
        "/account/password",
        data={**form, "new_password": "a password of my own", "confirm_password": "typo"},
    )
    assert response.status_code == 422
    assert "does not match" in response.get_data(as_text=True)
    response = browser.client.post(
        "/account/password",
        data={
            **form,
            "new_password": "a password of my own",
            "confirm_password": "a password of my own",
        },
    )
    assert response.status_code == 302 and response.headers["Location"] == "/patients"
    assert browser.get("/patients").status_code == 200
    assert "user.password_changed" in actions(session)
    assert Browser(app.test_client()).sign_in(FIRST_ADMIN_EMAIL, password).status_code == 401


def test_changing_the_password_ends_the_other_sessions(
    app: Flask, signed_in: Callable[[str], Browser]
) -> None:
    laptop, phone = signed_in(NURSE), signed_in(NURSE)
    token = csrf_from(laptop.get("/account/password"))
    response = laptop.client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "another long password",
            "confirm_password": "another long password",
        },
    )
    assert response.status_code == 302
    assert laptop.get("/patients").status_code == 200
    assert phone.get("/patients").status_code == 302


def test_a_disabled_account_cannot_sign_in(
    browser: Browser, staff: dict[str, int], session: so.Session
) -> None:
    user = session.get(User, staff["nurse"])
    assert user is not None
    user.active = False
    session.commit()
    response = browser.sign_in(NURSE)
    assert response.status_code == 401
    assert SIGN_IN_FAILED in response.get_data(as_text=True)


def test_wsgi_app_builds_the_app_from_the_environment(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from followup.app import wsgi_app

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SMS_TRANSPORT", "console")
    app = wsgi_app()
    try:
        assert app.test_client().get("/healthz").status_code == 200
        assert app.test_client().get("/patients").status_code == 302
    finally:
        app.extensions["followup"].engine.dispose()
