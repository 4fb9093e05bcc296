"""A signed-out visitor sees nothing of the clinic's data, even by posting too much.

Every page needs a signed-in user except /login, /healthz and Twilio's webhooks (README,
"The web app"). A POST to /import larger than the app's request limit (1 MiB) is refused
with 413 while CSRFProtect reads the form, before the sign-in gate runs; the Import
blueprint's own 413 handler then renders the whole Import page, with its list of recent
imports (file names, who ran them, how many patients each planned), to anyone who asks.
"""

from __future__ import annotations

import sqlalchemy.orm as so
from flask import Flask

from followup.app import MAX_REQUEST_BYTES
from followup.imports.service import create_run
from followup.runtime import Runtime
from tests.web.conftest import NURSE

FILENAME = "Moreno, Ada - referral.json"


def test_a_signed_out_post_to_import_past_the_size_limit_shows_no_import(
    app: Flask, session: so.Session, runtime: Runtime
) -> None:
    create_run(
        session=session, filename=FILENAME, actor=NURSE, dry_run=False, now=runtime.clock.now()
    )
    session.commit()
    with app.test_client() as anonymous:  # no cookie at all
        small = anonymous.post("/import", data={"files": "x"})
        large = anonymous.post(
            "/import",
            data=b"files=" + b"x" * (MAX_REQUEST_BYTES + 1),
            content_type="application/x-www-form-urlencoded",
        )

    assert FILENAME not in small.get_data(as_text=True)  # refused before the page (CSRF)
    page = large.get_data(as_text=True)
    assert FILENAME not in page, f"signed out, {large.status_code}: the import's file name"
    assert NURSE not in page, "signed out: who ran the import"
    assert "Recent imports" not in page
    assert large.status_code in (400, 401, 413)
