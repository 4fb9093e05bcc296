"""Passwords: at least 12 characters and not guessable (zxcvbn), with its advice shown."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy.orm as so

from followup.accounts.service import check_password_strength, create_user
from followup.clock import FakeClock
from followup.errors import ValidationError
from tests.web.conftest import ADMIN, NURSE, PASSWORD, Browser


@pytest.mark.parametrize(
    "password",
    ["aaaaaaaaaaaa", "123456789012", "passwordpass", "qwertyuiop12", "nurse@example.org1"],
)
def test_common_or_guessable_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        check_password_strength(password, field="password", user_inputs=["nurse@example.org"])
    assert excinfo.value.field == "password"
    assert excinfo.value.message.startswith("is too easy to guess")


@pytest.mark.parametrize("password", [PASSWORD, "velvet lantern harbor", "Tr0ub4dor&3xyz!"])
def test_strong_passwords_are_accepted(password: str) -> None:
    check_password_strength(password, field="password", user_inputs=["nurse@example.org"])


def test_length_bounds(session: so.Session, clock: FakeClock) -> None:
    for password, words in (("Xk9#", "at least 12"), ("Xk9#vB2!" * 20, "at most 128")):
        with pytest.raises(ValidationError, match=words):
            create_user(
                session=session,
                email="n@example.org",
                role="nurse",
                password=password,
                now=clock.now(),
                actor="test",
            )


def test_the_password_form_shows_zxcvbns_advice(signed_in: Callable[[str], Browser]) -> None:
    nurse = signed_in(NURSE)
    response = nurse.post(
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "passwordpass",
            "confirm_password": "passwordpass",
        },
        form_page="/account/password",
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="new_password-error"' in page
    assert "is too easy to guess" in page and "similar to a commonly used password" in page


def test_the_new_user_form_shows_zxcvbns_advice(signed_in: Callable[[str], Browser]) -> None:
    admin = signed_in(ADMIN)
    response = admin.post(
        "/users",
        {"email": "new@example.org", "role": "nurse", "password": "aaaaaaaaaaaa"},
        form_page="/users",
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "is too easy to guess" in page and "Repeats like" in page
