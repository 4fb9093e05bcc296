"""Every failed sign-in gets one answer; failures are throttled per address and per account.

The throttles are Flask-Limiter's, counting in its own memory storage with the wall
clock; `wall_clock` below moves that clock with the test's FakeClock, so a window's end
is tested without sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace

import limits.storage.memory
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.accounts.models import User
from followup.accounts.service import SIGN_IN_FAILED, reset_password
from followup.app import create_app
from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.runtime import Runtime
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser, csrf_from

ATTACKER = "203.0.113.9"
WARD = "198.51.100.20"


@pytest.fixture(autouse=True)
def wall_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[None]:
    """The limiter's memory storage reads time.time(): make it read the FakeClock."""
    monkeypatch.setattr(
        limits.storage.memory, "time", SimpleNamespace(time=lambda: clock.now().timestamp())
    )
    yield


def from_address(app: Flask, address: str) -> Browser:
    browser = Browser(app.test_client())
    browser.client.environ_base["REMOTE_ADDR"] = address
    return browser


def the_error(response_text: str) -> str:
    match = re.search(r'<div class="error-summary" role="alert"><p>(.*?)</p></div>', response_text)
    assert match, response_text
    return match.group(1)


def test_every_failed_sign_in_gets_the_same_status_and_message(
    app: Flask, staff: dict[str, int], session: so.Session
) -> None:
    deactivated = session.get(User, staff["admin"])
    assert deactivated is not None
    deactivated.active = False
    session.commit()
    answers = set()
    for email, password in (
        ("nobody@example.org", "wrong password!"),  # unknown
        (NURSE, "wrong password!"),  # known, wrong password
        (ADMIN, PASSWORD),  # known, right password, deactivated
        ("NOT AN EMAIL", ""),
        ("", ""),
    ):
        response = from_address(app, WARD).sign_in(email, password)
        answers.add((response.status_code, the_error(response.get_data(as_text=True))))
    # Throttled (the 6th failure for one account from one address): the same again.
    attacker = from_address(app, ATTACKER)
    for _ in range(5):
        attacker.sign_in(NURSE, "wrong password!")
    response = attacker.sign_in(NURSE, PASSWORD)  # right password, but throttled
    answers.add((response.status_code, the_error(response.get_data(as_text=True))))
    assert answers == {(401, SIGN_IN_FAILED.replace("'", "&#39;"))}


def test_five_failures_for_one_account_from_one_address_wait_15_minutes_there_only(
    app: Flask, staff: dict[str, int], session: so.Session, clock: FakeClock
) -> None:
    attacker = from_address(app, ATTACKER)
    for _ in range(5):
        assert attacker.sign_in(NURSE, "wrong password!").status_code == 401
    assert attacker.sign_in(NURSE).status_code == 401  # throttled: not even checked
    # The nurse at her own computer is not locked out by someone else's failures.
    assert from_address(app, WARD).sign_in(NURSE).status_code == 302
    # Another account from the attacker's address is still checked.
    assert attacker.sign_in(ADMIN).status_code == 302
    clock.advance(timedelta(minutes=15))
    assert from_address(app, ATTACKER).sign_in(NURSE).status_code == 302
    session.expire_all()
    throttled = session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "user.sign_in_throttled")
    ).all()
    assert len(throttled) == 1 and throttled[0].detail == f"from {ATTACKER}"
    assert NURSE not in throttled[0].actor  # a fingerprint of what was typed


def test_a_burst_of_failures_from_one_address_is_slowed_down(
    app: Flask, staff: dict[str, int], session: so.Session
) -> None:
    sprayer = from_address(app, ATTACKER)
    token = csrf_from(sprayer.get("/login"))
    for n in range(100):
        response = sprayer.client.post(
            "/login",
            data={"csrf_token": token, "email": f"user{n}@example.org", "password": "Spring2026!"},
        )
        assert response.status_code == 401
    session.expire_all()
    checked = session.scalar(
        sa.select(sa.func.count()).where(AuditEvent.action == "user.sign_in_failed")
    )
    throttled = session.scalar(
        sa.select(sa.func.count()).where(AuditEvent.action == "user.sign_in_throttled")
    )
    assert (checked, throttled) == (10, 90)  # 10 a minute from one address
    # Even the right password is not checked from there for now; elsewhere it is.
    assert sprayer.sign_in(NURSE).status_code == 401
    assert from_address(app, WARD).sign_in(NURSE).status_code == 302


def test_the_address_limit_spans_15_minutes_and_a_day(
    app: Flask, staff: dict[str, int], clock: FakeClock
) -> None:
    sprayer = from_address(app, ATTACKER)
    for minute in range(3):
        for n in range(10):
            assert sprayer.sign_in(f"u{minute}-{n}@example.org", "x").status_code == 401
        clock.advance(timedelta(minutes=1))
    assert sprayer.sign_in(NURSE).status_code == 401  # 30 in 15 minutes
    clock.advance(timedelta(minutes=15))
    assert sprayer.sign_in(NURSE).status_code == 302


def test_successes_are_not_counted(app: Flask, staff: dict[str, int]) -> None:
    ward = from_address(app, WARD)
    for _ in range(25):
        assert ward.sign_in(NURSE).status_code == 302


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(
    runtime: Runtime, staff: dict[str, int]
) -> None:
    runtime.settings = replace(runtime.settings, trusted_proxies=1)
    app = create_app(runtime.settings, runtime=runtime)
    proxy = "127.0.0.1"

    def via_proxy(client_address: str) -> Browser:
        browser = from_address(app, proxy)
        browser.client.environ_base["HTTP_X_FORWARDED_FOR"] = client_address
        return browser

    for _ in range(5):
        via_proxy(ATTACKER).sign_in(NURSE, "wrong password!")
    assert via_proxy(ATTACKER).sign_in(NURSE).status_code == 401
    assert via_proxy(WARD).sign_in(NURSE).status_code == 302  # same proxy, other client


def test_no_typed_password_is_readable_on_the_audit_page(
    app: Flask, signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    typed = "Tr0ub4dor&3-typed-in-the-email-box"
    from_address(app, WARD).sign_in(typed, "")
    from_address(app, WARD).sign_in(typed, "")
    admin = signed_in(ADMIN)
    page = admin.get("/audit").get_data(as_text=True)
    assert "Tr0ub4dor" not in page and "typed-in-the-email-box" not in page
    session.expire_all()
    actors = session.scalars(
        sa.select(AuditEvent.actor).where(AuditEvent.action == "user.sign_in_failed")
    ).all()
    # The same text gives the same fingerprint, so repeated guesses are visible.
    assert len(actors) == 2 and actors[0] == actors[1] and actors[0] in page
    assert all(
        "Tr0ub4dor" not in (e.actor + (e.detail or ""))
        for e in session.scalars(sa.select(AuditEvent))
    )


def test_wrong_current_passwords_on_the_change_page_are_throttled_per_account(
    app: Flask, staff: dict[str, int], signed_in: Callable[[str], Browser], clock: FakeClock
) -> None:
    """A session left open on a ward computer let anyone guess its owner's password on
    /account/password, as fast as they could post, with no limit at all."""
    browser = signed_in(NURSE)

    def change(current: str) -> int:
        token = csrf_from(browser.get("/account/password"))
        form = {
            "csrf_token": token,
            "current_password": current,
            "new_password": "a brand new passphrase of mine",
            "confirm_password": "a brand new passphrase of mine",
        }
        return browser.client.post("/account/password", data=form).status_code

    assert [change(f"guess number {n}") for n in range(5)] == [422] * 5
    assert change(PASSWORD) == 429  # the right one too, until the window ends
    other = signed_in(ADMIN)  # another account is not held up
    assert other.get("/account/password").status_code == 200
    clock.advance(timedelta(minutes=15, seconds=1))
    assert change(PASSWORD) == 302  # changed


def test_other_mistakes_on_the_change_page_are_not_counted(
    app: Flask, staff: dict[str, int], signed_in: Callable[[str], Browser]
) -> None:
    browser = signed_in(NURSE)
    for _ in range(7):
        token = csrf_from(browser.get("/account/password"))
        form = {
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "a brand new passphrase of mine",
            "confirm_password": "a typo in the confirmation",
        }
        assert browser.client.post("/account/password", data=form).status_code == 422


def test_twenty_wrong_current_passwords_in_a_day_are_not_told_to_wait_15_minutes(
    app: Flask, staff: dict[str, int], signed_in: Callable[[str], Browser], clock: FakeClock
) -> None:
    """Past 20 wrong in a day the page said "Wait 15 minutes", and 15 minutes later the
    change was refused again, until the day's window ended."""
    browser = signed_in(NURSE)

    def change(current: str) -> tuple[int, str]:
        token = csrf_from(browser.get("/account/password"))
        form = {
            "csrf_token": token,
            "current_password": current,
            "new_password": "a brand new passphrase of mine",
            "confirm_password": "a brand new passphrase of mine",
        }
        response = browser.client.post("/account/password", data=form)
        return response.status_code, response.get_data(as_text=True)

    for round_ in range(4):  # five at a time, past each 15 minutes
        assert [change(f"guess {round_} {n}")[0] for n in range(5)] == [422] * 5
        if round_ == 0:
            status, text = change(PASSWORD)
            assert status == 429
            assert "Wait 15 minutes and try again" in text
        clock.advance(timedelta(minutes=5 if round_ == 3 else 16))
    for _ in range(2):  # both throttles full, then the day's alone
        status, text = change(PASSWORD)
        assert status == 429
        assert "Try again tomorrow" in text
        assert "15 minutes" not in text
        clock.advance(timedelta(minutes=16))


def test_the_one_time_password_an_admin_gives_after_the_throttle_changes_the_password(
    app: Flask,
    staff: dict[str, int],
    signed_in: Callable[[str], Browser],
    session: so.Session,
    clock: FakeClock,
) -> None:
    """The throttled page says "ask an admin to reset your password". She did; signed in
    with the one-time password she is sent to choose her own, and that change was refused
    429 for the rest of the window (a day, past 20): the count was the account's alone,
    where the sign-in throttle's starts afresh with each reset."""

    def change(browser: Browser, current: str) -> int:
        token = csrf_from(browser.get("/account/password"))
        form = {
            "csrf_token": token,
            "current_password": current,
            "new_password": "a brand new passphrase of mine",
            "confirm_password": "a brand new passphrase of mine",
        }
        return browser.client.post("/account/password", data=form).status_code

    left_open = signed_in(NURSE)
    assert [change(left_open, f"guess {n}") for n in range(6)] == [422] * 5 + [429]
    one_time = reset_password(
        session=session, user_id=staff["nurse"], actor="admin@example.org", now=clock.now()
    )
    session.commit()
    nurse = Browser(app.test_client())
    assert nurse.sign_in(NURSE, one_time).headers["Location"] == "/account/password"
    assert change(nurse, one_time) == 302
