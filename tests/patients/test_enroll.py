from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.messaging.models import Message, MessageEvent
from followup.patients.edits import change_completion_time
from followup.patients.models import Patient, Procedure
from followup.patients.service import enroll_patient
from followup.patients.validation import EnrollmentResult, parse_phone
from tests.conftest import enrollment_form

Enroll = Callable[..., EnrollmentResult]
NOW = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)  # 15:00 in New York


def counts(session: so.Session) -> tuple[int, int, int, int]:
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Patient)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Procedure)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Message)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) or 0,
    )


def test_enrollment_saves_patient_procedure_plan_and_audit(
    session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    result = enroll(blood_thinner="Eliquis", language="es")
    patient = session.get(Patient, result.patient.id)
    assert patient is not None
    assert (patient.phone, patient.language, patient.timezone) == (
        "+12025550143",
        "es",
        "America/New_York",
    )
    assert patient.sms_consent_at == NOW and patient.consent_recorded_by == "test"
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None
    assert procedure.completed_at == datetime(2026, 3, 6, 18, 30, tzinfo=UTC)
    assert procedure.planned_at == NOW and procedure.blood_thinner == "Eliquis"
    assert [m.step for m in result.messages] == [
        "no-driving",
        "soreness",
        "blood-thinner-restart",
        "warning-signs",
        "pain-check",
    ]
    assert counts(session) == (1, 1, 5, 1)
    audit = session.scalars(sa.select(AuditEvent)).one()
    assert (audit.action, audit.record_id) == ("patient.enrolled", patient.id)
    assert "555" not in (audit.detail or "")


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"phone": "555-01"}, "phone", "not a valid phone number"),
        ({"phone": ""}, "phone", "is required"),
        ({"procedure": "spinal fusion"}, "procedure", "must be one of"),
        ({"timezone": "Mars/Olympus"}, "timezone", "not an IANA time zone"),
        ({"completed_at": "2026-03-06T16:00"}, "completed_at", "in the future"),
        ({"completed_at": "yesterday"}, "completed_at", "not an ISO 8601"),
        ({"completed_at": "2026-01-01T10:00"}, "completed_at", "more than 30 days ago"),
        (
            {"completed_at": "2026-03-08T02:30", "now": datetime(2026, 3, 9, tzinfo=UTC)},
            "completed_at",
            "does not exist",
        ),
        ({"language": "fr"}, "language", "must be one of"),
        ({"blood_thinner": "x" * 31}, "blood_thinner", "longer than 30"),
        ({"blood_thinner": "Xarelto™"}, "blood_thinner", "cannot carry"),
        ({"consent": False}, "consent", "must agree"),
        ({"first_name": "  "}, "first_name", "is required"),
        ({"first_name": "A\x00da"}, "first_name", "control character (U+0000)"),
        ({"last_name": "Mor\teno"}, "last_name", "control character (U+0009)"),
        ({"blood_thinner": "Eli\x1bquis"}, "blood_thinner", "control character (U+001B)"),
        ({"external_id": "CASE\x00-1"}, "external_id", "control character (U+0000)"),
    ],
)
def test_bad_enrollment_names_the_field_and_writes_nothing(
    session: so.Session, care: CareContext, overrides: dict[str, object], field: str, words: str
) -> None:
    now = overrides.pop("now", NOW)
    with pytest.raises(ValidationError) as excinfo:
        enroll_patient(
            session=session,
            form=enrollment_form(**overrides),
            care=care,
            region="US",
            now=now,
            actor="t",
        )  # type: ignore[arg-type]
    session.rollback()
    assert excinfo.value.field == field
    assert words in excinfo.value.message
    assert counts(session) == (0, 0, 0, 0)


def test_the_same_phone_and_completion_time_is_refused_not_duplicated(
    session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    first = enroll()
    with pytest.raises(ValidationError, match=f"patient {first.patient.id}"):
        enroll(phone="+1 202 555 0143")
    session.rollback()
    assert counts(session)[:3] == (1, 1, 4)


def test_an_opted_out_number_cannot_be_enrolled_again(
    session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    first = enroll()
    session.execute(
        sa.update(Patient).where(Patient.id == first.patient.id).values(opted_out_at=NOW)
    )
    session.commit()
    with pytest.raises(ValidationError, match="replied STOP"):
        enroll(completed_at="2026-03-06T11:00")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(202) 555-0143", "+12025550143"),
        ("+1 202-555-0143", "+12025550143"),
        ("+44 7911 123456", "+447911123456"),
    ],
)
def test_parse_phone_stores_e164(raw: str, expected: str) -> None:
    assert parse_phone(raw, region="US") == expected


def test_completion_with_an_offset_is_taken_as_given(
    session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    result = enroll(completed_at="2026-03-06T18:30:00+00:00", timezone="Europe/London")
    assert result.procedure.completed_at == datetime(2026, 3, 6, 18, 30, tzinfo=UTC)


def test_late_enrollment_plans_expired_rows_visible_in_the_log(
    session: so.Session, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(datetime(2026, 3, 8, 2, 0, tzinfo=UTC))  # Saturday 21:00 in New York
    result = enroll(completed_at="2026-03-06T13:00")
    assert {m.step: m.status for m in result.messages} == {
        "no-driving": "expired",
        "soreness": "expired",
        "warning-signs": "pending",
        "pain-check": "pending",
        # The first text the patient gets must introduce the program, and warning-signs
        # cannot carry it: the welcome goes now (quiet hours permitting).
        "welcome": "pending",
    }
    kinds = session.scalars(sa.select(MessageEvent.kind).order_by(MessageEvent.id)).all()
    assert kinds.count("expired") == 2 and kinds.count("planned") == 3
    assert result.procedure.intro_step == "welcome"


def test_correcting_the_completion_time_replans_unsent_texts_only(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="heparin")
    no_driving = next(m for m in result.messages if m.step == "no-driving")
    session.execute(
        sa.update(Message).where(Message.id == no_driving.id).values(status="sent", sent_at=NOW)
    )
    session.commit()
    # The nurse typed 14:30 but the procedure ended at 11:00 the day before... no: at 09:00 today.
    messages = change_completion_time(
        session=session,
        procedure_id=result.procedure.id,
        completed_at="2026-03-06T09:00",
        care=care,
        now=NOW,
        actor="nurse",
    )
    session.commit()
    by_step = {m.step: m for m in messages}
    assert by_step["no-driving"].status == "sent"  # already sent: untouched
    restart = by_step["blood-thinner-restart"]
    assert restart.due_at == datetime(2026, 3, 6, 14, 0, tzinfo=UTC) + timedelta(hours=48)
    assert by_step["soreness"].due_at == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    events = session.scalars(
        sa.select(MessageEvent.kind).where(MessageEvent.message_id == restart.id)
    ).all()
    assert events == ["planned", "replanned"]
    audit = session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert audit == ["patient.enrolled", "procedure.completion_changed"]


def test_a_correction_that_reopens_a_window_revives_an_expired_text(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(datetime(2026, 3, 7, 16, 0, tzinfo=UTC))  # Saturday 11:00
    # Typo: Thursday instead of Friday, so Friday's soreness text looks expired.
    result = enroll(completed_at="2026-03-05T14:30")
    assert {m.step: m.status for m in result.messages}["warning-signs"] == "pending"
    messages = change_completion_time(
        session=session,
        procedure_id=result.procedure.id,
        completed_at="2026-03-06T14:30",
        care=care,
        now=clock.now(),
        actor="nurse",
    )
    by_step = {m.step: m for m in messages}
    assert by_step["soreness"].status == "pending"
    assert by_step["soreness"].due_at == clock.now()  # its window is open now: send now
    assert by_step["no-driving"].status == "expired"
