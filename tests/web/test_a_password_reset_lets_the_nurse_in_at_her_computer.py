"""An admin's password reset lets a locked-out nurse sign in again at her own computer.

A nurse who forgot her password fails a few sign-ins at the ward computer (5 failures
for her account from one computer make it wait 15 minutes there; 10 in an hour and 20 in
a day wait longer) and asks an admin, who resets it to a one-time password. `reset_password`
says it "lifts any lockout" (it zeroes `users.failed_logins` and `locked_until`), but the
lockout is Flask-Limiter's counter keyed by the computer and the typed email, which
nothing resets: the right one-time password is answered "Sign-in failed ... or there were
too many failed sign-ins from here" for up to a day, at the computer she works at.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask

from followup.accounts.service import SIGN_IN_FAILED
from tests.web.conftest import ADMIN, NURSE, Browser

WARD = "198.51.100.20"


def test_a_one_time_password_from_a_reset_signs_in_where_the_forgotten_one_failed(
    app: Flask, signed_in: Callable[[str], Browser], staff: dict[str, int]
) -> None:
    ward = Browser(app.test_client())
    ward.client.environ_base["REMOTE_ADDR"] = WARD
    for guess in ("winter garden 2025", "Winter garden 2025", "winter-garden-2025", "x" * 12):
        assert ward.sign_in(NURSE, guess).status_code == 401
    assert ward.sign_in(NURSE, "winter garden 2026").status_code == 401  # the 5th: 15 minutes

    admin = signed_in(ADMIN)
    page = admin.post(f"/users/{staff['nurse']}/password", {}, form_page="/users")
    match = re.search(r"<code class=\"sid\">(once-[^<]+)</code>", page.get_data(as_text=True))
    assert match, "no one-time password on the page"

    response = ward.sign_in(NURSE, match.group(1))
    refused = SIGN_IN_FAILED.replace("'", "&#39;") in response.get_data(as_text=True)
    assert response.status_code == 302, (
        f"the admin's one-time password at the nurse's computer: {response.status_code}"
        + (" 'Sign-in failed ... too many failed sign-ins from here'" if refused else "")
    )
    assert response.headers["Location"].endswith("/account/password")
