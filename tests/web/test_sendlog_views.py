"""The admins' send log, dashboard and attention queue, through the Flask test client."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.patients.validation import EnrollmentResult
from tests.web.conftest import ADMIN, NURSE, Browser

Enroll = Callable[..., EnrollmentResult]


def failed_restart(session: so.Session, enroll: Enroll, clock: FakeClock) -> EnrollmentResult:
    result = enroll(first_name="Ada", last_name="Moreno", blood_thinner="Eliquis")
    enroll(first_name="Bo", last_name="Lindqvist", phone="(202) 555-0177")
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == result.patient.id, Message.step == "blood-thinner-restart")
        .values(status="failed", error_code="30006", updated_at=clock.now())
    )
    session.commit()
    return result


def test_a_nurse_is_refused_every_admin_page(signed_in: Callable[[str], Browser]) -> None:
    nurse = signed_in(NURSE)
    for path in ("/log", "/log.csv", "/log/1", "/audit", "/users"):
        assert nurse.get(path).status_code == 403, path
    assert nurse.get("/").headers["Location"].endswith("/patients")
    assert nurse.get("/attention").status_code == 200


def test_the_log_shows_each_text_with_masked_phone_local_time_and_error_words(
    signed_in: Callable[[str], Browser], session: so.Session, enroll: Enroll, clock: FakeClock
) -> None:
    failed_restart(session, enroll, clock)
    admin = signed_in(ADMIN)
    page = admin.get("/log?status=failed").get_data(as_text=True)
    assert "Ada Moreno" in page and "Lindqvist" not in page
    assert "+1******0143" in page and "5550143" not in page
    assert "30006" in page and "landline or unreachable carrier" in page
    assert "Sun 2026-03-08" in page  # 48 h after Friday 13:30 EST, in the patient's zone
    everything = admin.get("/log").get_data(as_text=True)
    assert everything.count("<tr>") - 1 == 9  # nine texts, one header row


def test_pages_follow_the_cursor_and_a_bad_filter_is_a_field_error(
    signed_in: Callable[[str], Browser], session: so.Session, enroll: Enroll, clock: FakeClock
) -> None:
    failed_restart(session, enroll, clock)
    admin = signed_in(ADMIN)
    first = admin.get("/log?step=soreness").get_data(as_text=True)
    assert "data-next-cursor" not in first  # two texts fit on one page
    bad = admin.get("/log?date_from=yesterday")
    assert bad.status_code == 422 and "Not a valid date value" in bad.get_data(as_text=True)
    assert admin.get("/log?cursor=garbage").status_code == 400


def test_history_lists_every_event(
    signed_in: Callable[[str], Browser], session: so.Session, enroll: Enroll, clock: FakeClock
) -> None:
    result = failed_restart(session, enroll, clock)
    message = next(m for m in result.messages if m.step == "blood-thinner-restart")
    page = signed_in(ADMIN).get(f"/log/{message.id}").get_data(as_text=True)
    assert "planned" in page and "landline or unreachable carrier" in page
    assert signed_in(ADMIN).get("/log/99999").status_code == 404


def test_csv_export_streams_the_filtered_log_and_is_audited(
    signed_in: Callable[[str], Browser], session: so.Session, enroll: Enroll, clock: FakeClock
) -> None:
    failed_restart(session, enroll, clock)
    response = signed_in(ADMIN).get(
        "/log.csv?status=failed&date_from=2026-03-01&date_to=2026-03-31"
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["step"], r["status"], r["error_code"]) for r in rows] == [
        ("blood-thinner-restart", "failed", "30006")
    ]
    audit = session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "sendlog.exported")
    ).one()
    assert audit.actor == ADMIN
    assert audit.detail == "status=failed, from=2026-03-01, to=2026-03-31"


def test_dashboard_shows_figures_and_an_svg_chart(
    signed_in: Callable[[str], Browser], session: so.Session, enroll: Enroll, clock: FakeClock
) -> None:
    result = failed_restart(session, enroll, clock)
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == result.patient.id, Message.step == "no-driving")
        .values(
            status="delivered", sent_at=clock.now(), delivered_at=clock.now() + timedelta(seconds=3)
        )
    )
    session.commit()
    page = signed_in(ADMIN).get("/").get_data(as_text=True)
    assert "<svg" in page and 'role="img"' in page
    assert "1 sent, 1 delivered, 1 failed" in page
    assert "30006" in page
    assert "blood-thinner-restart failed (error 30006)" in page
