"""A password change or reset ends every session of the account, also one being opened.

README ("Accounts"): a sign-in ends "when the password is changed or reset or the account
deactivated; a copy of the cookie stops working with it". `sign_in` checks the typed
password against the hash it read, then `_begin` opens the session afterwards; nothing
ties the two together, so a sign-in with the old password whose check ran before a
change (or an admin's reset) committed opens its session after the change ended "every"
session, and that session then lasts a whole shift (10 hours). Whoever had the old
password (the reason for the reset) keeps signing in in a loop and keeps the account:
successful sign-ins are not throttled.

The interleaving is forced: the attacker's password check is held (an Event) until the
change has been committed, as a scrypt check of about 50 ms lets it happen in real life.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

import followup.accounts.service as accounts_service
from followup.clock import FakeClock
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser

NEW_PASSWORD = "velvet lantern harbor"  # noqa: S105 - a test password
WAIT = 5.0  # seconds the held check waits at most (a fix that locks may make it wait)


@pytest.mark.parametrize("how", ["changed by the nurse", "reset by an admin"])
def test_a_sign_in_with_the_old_password_checked_before_a_change_is_not_let_in(
    app: Flask,
    signed_in: Callable[[str], Browser],
    staff: dict[str, int],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    nurse = signed_in(NURSE)
    admin = signed_in(ADMIN)
    attacker = Browser(app.test_client())
    checked, changed = threading.Event(), threading.Event()
    real_check = accounts_service.check_password_hash
    attacker_thread: list[threading.Thread] = []

    def held_check(pwhash: str, password: str) -> bool:
        ok: bool = real_check(pwhash, password)
        if attacker_thread and threading.current_thread() is attacker_thread[0]:
            checked.set()  # the old password was right a moment ago ...
            changed.wait(WAIT)  # ... and the change commits meanwhile
        return ok

    monkeypatch.setattr(accounts_service, "check_password_hash", held_check)
    outcome: dict[str, Any] = {}

    def attacker_signs_in() -> None:
        outcome["sign_in"] = attacker.sign_in(NURSE, PASSWORD).status_code

    attacker_thread.append(threading.Thread(target=attacker_signs_in, name="attacker"))
    attacker_thread[0].start()
    assert checked.wait(WAIT), "the attacker's sign-in never checked the password"
    clock.advance(timedelta(seconds=1))
    if how == "changed by the nurse":
        response = nurse.post(
            "/account/password",
            {
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "confirm_password": NEW_PASSWORD,
            },
            form_page="/account/password",
        )
    else:
        response = admin.post(f"/users/{staff['nurse']}/password", {}, form_page="/users")
    changed.set()
    attacker_thread[0].join(timeout=30)
    assert response.status_code in (200, 302), response.get_data(as_text=True)[:500]

    clock.advance(timedelta(minutes=5))
    page = attacker.get("/patients")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login"), (
        f"password {how}; the sign-in with the old password (answered "
        f"{outcome.get('sign_in')}) is still let in: /patients answers {page.status_code}"
    )
