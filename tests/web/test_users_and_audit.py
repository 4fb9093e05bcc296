"""Admins manage accounts and read a filterable, append-only audit trail."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.accounts.models import User
from followup.accounts.service import SIGN_IN_FAILED
from followup.audit.models import AuditEvent
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser


def actions(session: so.Session) -> list[tuple[str, str]]:
    session.expire_all()
    return [
        (e.actor, e.action) for e in session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))
    ]


def test_a_deactivated_nurse_cannot_sign_in_and_her_session_ends(
    app: Flask, signed_in: Callable[[str], Browser], staff: dict[str, int], session: so.Session
) -> None:
    nurse = signed_in(NURSE)
    admin = signed_in(ADMIN)
    response = admin.post(f"/users/{staff['nurse']}/active", {"active": "0"}, form_page="/users")
    assert response.status_code == 302
    assert "deactivated" in admin.get("/users").get_data(as_text=True)
    assert nurse.get("/patients").status_code == 302  # back to the sign-in page
    refused = Browser(app.test_client()).sign_in(NURSE)
    assert refused.status_code == 401 and SIGN_IN_FAILED in refused.get_data(as_text=True)
    admin.post(f"/users/{staff['nurse']}/active", {"active": "1"}, form_page="/users")
    assert Browser(app.test_client()).sign_in(NURSE).status_code == 302
    assert (ADMIN, "user.deactivated") in actions(session)
    assert (NURSE, "user.sign_in_failed") in actions(session)
    assert (ADMIN, "user.reactivated") in actions(session)


def test_the_last_active_admin_cannot_be_deactivated(
    signed_in: Callable[[str], Browser], staff: dict[str, int], session: so.Session
) -> None:
    admin = signed_in(ADMIN)
    admin.post(f"/users/{staff['admin']}/active", {"active": "0"}, form_page="/users")
    assert "last active admin" in admin.get("/users").get_data(as_text=True)
    session.expire_all()
    assert session.get(User, staff["admin"]).active is True  # type: ignore[union-attr]


def test_a_password_reset_shows_a_one_time_password_once_that_must_be_replaced(
    app: Flask, signed_in: Callable[[str], Browser], staff: dict[str, int], session: so.Session
) -> None:
    admin = signed_in(ADMIN)
    page = admin.post(f"/users/{staff['nurse']}/password", {}, form_page="/users").get_data(
        as_text=True
    )
    match = re.search(r"<code class=\"sid\">(once-[^<]+)</code>", page)
    assert match, page
    one_time = match.group(1)
    assert one_time not in admin.get("/users").get_data(as_text=True)  # shown once
    assert Browser(app.test_client()).sign_in(NURSE, PASSWORD).status_code == 401  # old one gone
    fresh = Browser(app.test_client())
    response = fresh.sign_in(NURSE, one_time)
    assert response.headers["Location"].endswith("/account/password")
    assert (ADMIN, "user.password_reset") in actions(session)
    assert all(one_time not in (e.detail or "") for e in session.scalars(sa.select(AuditEvent)))


def test_sign_ins_and_failures_are_audited_and_the_trail_filters(
    app: Flask, signed_in: Callable[[str], Browser], staff: dict[str, int], session: so.Session
) -> None:
    Browser(app.test_client()).sign_in("intruder@example.net", "guess-guess-guess")
    Browser(app.test_client()).sign_in(NURSE, "wrong password!!")
    admin = signed_in(ADMIN)
    trail = actions(session)
    # What was typed for an unknown account is kept only as a keyed fingerprint.
    unknown = [actor for actor, action in trail if actor.startswith("unknown account ")]
    assert len(unknown) == 1 and ("intruder" not in unknown[0])
    assert (unknown[0], "user.sign_in_failed") in trail
    assert (NURSE, "user.sign_in_failed") in trail
    assert (ADMIN, "user.signed_in") in trail
    failed = (
        admin.get("/audit?action=user.sign_in_failed").get_data(as_text=True).split("<tbody>")[1]
    )
    assert unknown[0] in failed and "user.signed_in" not in failed
    assert "intruder" not in failed
    by_actor = admin.get("/audit?actor=UNKNOWN+ACCOUNT").get_data(as_text=True)
    assert unknown[0] in by_actor and NURSE not in by_actor.split("<tbody>")[1]
    none = admin.get("/audit?date_from=2030-01-01").get_data(as_text=True)
    assert "No events match." in none
    assert admin.get("/audit?date_from=someday").status_code == 422  # a field error, not a 500
    # Append-only: the app has no way to change or delete an audit event.
    for method in ("post", "put", "delete", "patch"):
        assert getattr(admin.client, method)("/audit").status_code in (400, 405)
