"""Two `followup serve` processes starting at the same moment on a fresh database: the
second still starts when the first commits the first admin while the second is between
its "no user yet" read and its INSERT.

`_create_first_admin` (followup/cli.py) now copes with the unique e-mail refusing the
INSERT (IntegrityError). But `ensure_first_admin` reads "no user", then `create_user`
checks the one-time password's strength (zxcvbn: tens of milliseconds), then reads again
whether admin@followup.local "is already in use" before the INSERT. A first admin
committed by the other process in that gap is seen by the second read, which raises
ValidationError("email", "is already in use"): not an IntegrityError, so it is not caught,
and `serve` exits 2 with "--email: is already in use" (no web app, no scheduler).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from followup.accounts import service
from followup.accounts.models import User
from followup.cli import _create_first_admin
from followup.runtime import Runtime


def test_an_admin_created_elsewhere_during_the_password_check_lets_serve_start(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    strength = service.check_password_strength
    other_done: list[object] = []

    def while_checking(password: str, *, field: str, user_inputs: list[str]) -> None:
        strength(password, field=field, user_inputs=user_inputs)
        if not other_done:
            # The other `serve` process, started a moment earlier, commits its admin now.
            other_done.append(True)
            with runtime.session_factory() as other:
                assert service.ensure_first_admin(session=other, now=runtime.clock.now())
                other.commit()

    monkeypatch.setattr(service, "check_password_strength", while_checking)

    try:
        created = _create_first_admin(runtime)
    except Exception as exc:  # noqa: BLE001 - what `serve` would exit on
        pytest.fail(
            f"_create_first_admin raised {type(exc).__name__}: {exc}: `serve` exits at "
            "start-up although another process created the first admin"
        )
    assert other_done, "the other process never created its admin"
    assert created is None
    with runtime.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
