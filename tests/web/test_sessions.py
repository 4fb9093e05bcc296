"""Server-side sessions: sign-out, lifetime, idle timeout, revocation, the admins' page."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.accounts.models import UserSession
from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser, csrf_from

SESSION_COOKIE = "session"


def cookie_of(browser: Browser) -> str:
    cookie = browser.client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    return cookie.value


def browser_with(app: Flask, cookie: str) -> Browser:
    """Another browser (another test client) holding a copy of a session cookie."""
    other = Browser(app.test_client())
    other.client.set_cookie(SESSION_COOKIE, cookie)
    return other


def signed_in_page(browser: Browser) -> bool:
    response = browser.get("/patients")
    return response.status_code == 200


def test_a_cookie_copied_before_sign_out_is_refused_after_it(
    app: Flask, signed_in: Callable[[str], Browser]
) -> None:
    nurse = signed_in(NURSE)
    copied = cookie_of(nurse)
    thief = browser_with(app, copied)
    assert signed_in_page(thief)  # the copy works while the session is open
    nurse.post("/logout", {}, form_page="/patients")
    assert not signed_in_page(nurse)
    response = browser_with(app, copied).get("/patients")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_copied_cookie_is_refused_after_sign_out_over_real_http(
    live_server: str, staff: dict[str, int]
) -> None:
    """The same, through a real HTTP client against a real server, from a second client."""
    nurse = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', nurse.get(f"{live_server}/login").text)
    assert token
    response = nurse.post(
        f"{live_server}/login",
        data={"csrf_token": token.group(1), "email": NURSE, "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status_code == 302
    copied = nurse.cookies.get(SESSION_COOKIE)
    assert copied
    other = requests.Session()
    other.cookies.set(SESSION_COOKIE, copied)
    assert other.get(f"{live_server}/patients", allow_redirects=False).status_code == 200
    page = nurse.get(f"{live_server}/patients").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    out = nurse.post(
        f"{live_server}/logout", data={"csrf_token": csrf.group(1)}, allow_redirects=False
    )
    assert out.status_code == 302
    again = requests.Session()
    again.cookies.set(SESSION_COOKIE, copied)
    refused = again.get(f"{live_server}/patients", allow_redirects=False)
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")


def test_a_session_is_refused_10_hours_after_sign_in_however_it_is_used(
    app: Flask, signed_in: Callable[[str], Browser], clock: FakeClock, session: so.Session
) -> None:
    nurse = signed_in(NURSE)
    copied = cookie_of(nurse)
    started = clock.now()
    # Used every 20 minutes (inside the idle timeout) for the whole shift...
    while clock.now() + timedelta(minutes=20) < started + timedelta(hours=10):
        clock.advance(timedelta(minutes=20))
        assert signed_in_page(nurse), clock.now() - started
    clock.set(started + timedelta(hours=10) - timedelta(seconds=1))
    assert signed_in_page(nurse)
    clock.set(started + timedelta(hours=10))
    assert not signed_in_page(nurse)  # ... and not a second longer
    assert not signed_in_page(browser_with(app, copied))
    session.expire_all()
    row = session.scalars(sa.select(UserSession)).one()
    assert (row.ended_at, row.end_reason) == (started + timedelta(hours=10), "expired")


def test_session_hours_sets_the_lifetime(
    app: Flask, signed_in: Callable[[str], Browser], clock: FakeClock, runtime: object
) -> None:
    from dataclasses import replace

    from followup.app import create_app
    from followup.runtime import Runtime

    assert isinstance(runtime, Runtime)
    runtime.settings = replace(runtime.settings, session_hours=2.0, session_idle_minutes=240)
    short = create_app(runtime.settings, runtime=runtime)
    browser = Browser(short.test_client())
    assert browser.sign_in(NURSE).status_code == 302
    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert signed_in_page(browser)
    clock.advance(timedelta(seconds=1))
    assert not signed_in_page(browser)


def test_a_session_ends_after_the_idle_timeout(
    signed_in: Callable[[str], Browser], clock: FakeClock
) -> None:
    nurse = signed_in(NURSE)
    clock.advance(timedelta(minutes=29))
    assert signed_in_page(nurse)  # this use restarts the idle clock
    clock.advance(timedelta(minutes=29))
    assert signed_in_page(nurse)
    clock.advance(timedelta(minutes=30))
    response = nurse.get("/patients")
    assert response.status_code == 302
    page = nurse.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your session has ended" in page


def test_the_cookie_holds_a_token_and_the_database_only_its_hash(
    app: Flask, signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    nurse = signed_in(NURSE)
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    token = serializer.loads(cookie_of(nurse))["_user_id"]
    assert len(token) >= 40  # 32 random bytes
    row = session.scalars(sa.select(UserSession)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = [str(v) for v in session.execute(sa.select(UserSession.__table__)).one()]
    assert all(token not in value for value in stored)


def test_a_password_change_ends_every_other_session_and_renews_this_one(
    app: Flask, signed_in: Callable[[str], Browser]
) -> None:
    laptop, phone = signed_in(NURSE), signed_in(NURSE)
    before = cookie_of(laptop)
    response = laptop.post(
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "velvet lantern harbor",
            "confirm_password": "velvet lantern harbor",
        },
        form_page="/account/password",
    )
    assert response.status_code == 302
    assert signed_in_page(laptop)
    assert not signed_in_page(phone)
    assert not signed_in_page(browser_with(app, before))  # the old cookie of this browser too


@pytest.mark.parametrize("how", ["reset", "deactivate"])
def test_a_reset_or_deactivation_ends_the_sessions(
    app: Flask, signed_in: Callable[[str], Browser], staff: dict[str, int], how: str
) -> None:
    nurse = signed_in(NURSE)
    copied = cookie_of(nurse)
    admin = signed_in(ADMIN)
    if how == "reset":
        admin.post(f"/users/{staff['nurse']}/password", {}, form_page="/users")
    else:
        admin.post(f"/users/{staff['nurse']}/active", {"active": "0"}, form_page="/users")
    assert not signed_in_page(nurse)
    assert not signed_in_page(browser_with(app, copied))


def test_an_admin_sees_and_ends_a_users_open_sessions(
    app: Flask, signed_in: Callable[[str], Browser], staff: dict[str, int], session: so.Session
) -> None:
    ward, desk = signed_in(NURSE), signed_in(NURSE)
    admin = signed_in(ADMIN)
    users = admin.get("/users").get_data(as_text=True)
    assert f'href="/users/{staff["nurse"]}/sessions">2<' in users
    page = admin.get(f"/users/{staff['nurse']}/sessions").get_data(as_text=True)
    ids = re.findall(rf"/users/{staff['nurse']}/sessions/(\d+)/end", page)
    assert len(ids) == 2
    assert "127.0.0.1" in page
    # The newest first: the desk's session.
    response = admin.post(f"/users/{staff['nurse']}/sessions/{ids[0]}/end", {}, form_page="/users")
    assert response.status_code == 302
    assert signed_in_page(ward) and not signed_in_page(desk)
    admin.post(f"/users/{staff['nurse']}/sessions/end", {}, form_page="/users")
    assert not signed_in_page(ward)
    assert "No open sessions." in admin.get(f"/users/{staff['nurse']}/sessions").get_data(
        as_text=True
    )
    session.expire_all()
    ended = session.scalars(
        sa.select(AuditEvent.detail).where(AuditEvent.action == "user.sessions_ended")
    ).all()
    assert ended == [f"1 session(s), session {ids[0]}", "1 session(s)"]


def test_a_nurse_cannot_see_or_end_sessions(
    signed_in: Callable[[str], Browser], staff: dict[str, int]
) -> None:
    nurse = signed_in(NURSE)
    assert nurse.get(f"/users/{staff['admin']}/sessions").status_code == 403
    token = csrf_from(nurse.get("/patients"))
    response = nurse.client.post(
        f"/users/{staff['admin']}/sessions/end", data={"csrf_token": token}
    )
    assert response.status_code == 403


def test_ending_an_unknown_session_is_404(
    signed_in: Callable[[str], Browser], staff: dict[str, int]
) -> None:
    admin = signed_in(ADMIN)
    assert admin.post(f"/users/{staff['nurse']}/sessions/999/end", {}).status_code == 404
    assert admin.post("/users/99999/sessions/end", {}).status_code == 404
    assert admin.get("/users/99999999999999999999/sessions").status_code == 404
