"""Out-of-range input on the web: a 4xx naming the problem, never a 500, nothing written."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.patients.models import Patient
from tests.web.conftest import ADMIN, NURSE, Browser

FORM = {
    "first_name": "Ada",
    "last_name": "Moreno",
    "phone": "(202) 555-0143",
    "language": "en",
    "procedure": "kyphoplasty",
    "completed_at": "2026-03-06T13:30",
    "timezone": "America/New_York",
    "blood_thinner": "",
    "consent": "y",
}


def count(session: so.Session, model: type) -> int:
    session.expire_all()
    return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def test_a_completion_at_the_calendars_end_is_a_field_error(
    signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    nurse = signed_in(NURSE)
    for action in ("preview", "enroll"):
        response = nurse.post(
            "/patients/new",
            {**FORM, "completed_at": "9999-12-31T23:59", "timezone": "America/Los_Angeles",
             "action": action},
        )  # fmt: skip
        assert response.status_code == 422
        page = response.get_data(as_text=True)
        assert 'id="completed_at-error"' in page and "out of range" in page
    assert count(session, Patient) == 0


def test_a_60000_character_time_zone_is_a_field_error(
    signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    nurse = signed_in(NURSE)
    response = nurse.post("/patients/new", {**FORM, "timezone": "x" * 60_000, "action": "enroll"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="timezone-error"' in page and "x" * 100 not in page.split("timezone-error")[1][:400]
    assert count(session, Patient) == 0


def test_dates_out_of_range_on_the_log_and_audit_are_field_errors(
    signed_in: Callable[[str], Browser],
) -> None:
    admin = signed_in(ADMIN)
    for path in ("/log", "/audit"):
        response = admin.get(f"{path}?date_to=9999-12-31")
        assert response.status_code == 422
        assert "must be between 2000-01-01 and 2099-12-31" in response.get_data(as_text=True)


def test_the_csv_export_refuses_bad_filters_before_its_audit_row(
    signed_in: Callable[[str], Browser], session: so.Session
) -> None:
    admin = signed_in(ADMIN)
    before = count(session, AuditEvent)
    response = admin.get("/log.csv?date_to=9999-12-31")
    assert response.status_code == 400
    assert count(session, AuditEvent) == before
    response = admin.get("/log.csv?date_from=2026-03-07&date_to=2026-03-01")
    assert response.status_code == 400 and "before the start date" in response.get_data(
        as_text=True
    )
    assert count(session, AuditEvent) == before
    response = admin.get("/log.csv?date_to=2026-03-07")
    assert response.status_code == 200 and response.get_data(as_text=True).startswith("message_id")
    assert count(session, AuditEvent) == before + 1


def test_huge_ids_and_page_numbers_are_4xx(signed_in: Callable[[str], Browser]) -> None:
    admin = signed_in(ADMIN)
    huge = "9" * 30
    assert admin.get(f"/patients/{huge}").status_code == 404
    assert admin.get(f"/log/{huge}").status_code == 404
    assert admin.get(f"/patients/{2**31}").status_code == 404
    assert admin.get(f"/audit?page={huge}").status_code == 400
    assert admin.get("/audit?page=-3").status_code == 400
    assert admin.get(f"/patients?page={huge}").status_code < 500  # (patients: issue 12)
    cursor = "OTk5OS0xMi0zMVQwMDowMDowMCswMDowMHw5OTk5OTk5OTk5OTk5OTk5OQ"  # year 9999, id 10^18
    assert admin.get(f"/log?cursor={cursor}").status_code == 400


def test_a_request_body_over_a_megabyte_is_refused(signed_in: Callable[[str], Browser]) -> None:
    nurse = signed_in(NURSE)
    response = nurse.post("/patients/new", {**FORM, "first_name": "A" * 1_100_000})
    assert response.status_code == 413
