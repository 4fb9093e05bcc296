"""A sign-in that opened no session is not written in the audit as a sign-in.

An admin resets a nurse's password because someone else has it. The other person's
sign-in with the old password, whose check ran just before the reset committed, is now
refused when its session would be opened (`start_session` returns None and the page
answers "Sign-in failed"). But `sign_in` had already added `user.signed_in` ("from
203.0.113.9") and the login view committed it before `_begin` was refused: the audit page,
which the admin reads to see whether the reset shut the intruder out, shows the intruder
signed in again after the reset, and nothing shows that the sign-in was refused.

Every `user.signed_in` event must stand for a session that was opened. The interleaving
is forced as in test_a_sign_in_with_the_old_password_during_a_change_does_not_survive_it:
the intruder's password check is held (an Event) until the reset has been committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

import followup.accounts.service as accounts_service
from followup.accounts.models import UserSession
from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser

INTRUDER = "203.0.113.9"
WAIT = 5.0  # seconds the held check waits at most


def test_a_sign_in_refused_because_of_a_reset_is_not_audited_as_signed_in(
    app: Flask,
    signed_in: Callable[[str], Browser],
    staff: dict[str, int],
    session: so.Session,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = signed_in(ADMIN)
    intruder = Browser(app.test_client())
    intruder.client.environ_base["REMOTE_ADDR"] = INTRUDER
    checked, reset = threading.Event(), threading.Event()
    real_check = accounts_service.check_password_hash
    intruder_thread: list[threading.Thread] = []

    def held_check(pwhash: str, password: str) -> bool:
        ok: bool = real_check(pwhash, password)
        if intruder_thread and threading.current_thread() is intruder_thread[0]:
            checked.set()  # the old password was right a moment ago ...
            reset.wait(WAIT)  # ... and the admin's reset commits meanwhile
        return ok

    monkeypatch.setattr(accounts_service, "check_password_hash", held_check)
    outcome: dict[str, Any] = {}

    def intruder_signs_in() -> None:
        outcome["status"] = intruder.sign_in(NURSE, PASSWORD).status_code

    intruder_thread.append(threading.Thread(target=intruder_signs_in, name="intruder"))
    intruder_thread[0].start()
    assert checked.wait(WAIT), "the intruder's sign-in never checked the password"
    clock.advance(timedelta(seconds=1))
    response = admin.post(f"/users/{staff['nurse']}/password", {}, form_page="/users")
    reset.set()
    intruder_thread[0].join(timeout=30)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert outcome.get("status") == 401, f"the intruder's sign-in answered {outcome}"

    session.expire_all()
    opened = session.scalars(
        sa.select(UserSession).where(
            UserSession.user_id == staff["nurse"], UserSession.client_address == INTRUDER
        )
    ).all()
    assert opened == []  # the fix of 4931b2d holds: no session for the intruder
    audited = session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.record_id == staff["nurse"], AuditEvent.record_type == "user")
        .order_by(AuditEvent.id)
    ).all()
    trail = [(e.action, e.detail) for e in audited]
    assert ("user.signed_in", f"from {INTRUDER}") not in trail, (
        "no session was opened for the sign-in from the intruder's address (answered 401), "
        f"yet the audit records it as a sign-in: {trail}"
    )
