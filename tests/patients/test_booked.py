"""Booked procedures: texts before the procedure, "Procedure finished", rescheduling, and the
rules of enrollment that go with them (the explicit blood-thinner answer, DST-safe times)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.outbox import plan_procedures
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import TransientSendError
from followup.patients.edits import (
    cancel_patient_procedure,
    complete_procedure,
    preview_completion_change,
    reschedule_procedure,
)
from followup.patients.models import Patient, Procedure
from followup.patients.preview import preview_new_enrollment
from followup.patients.service import enroll_patient
from followup.patients.validation import (
    AmbiguousTime,
    EnrollmentResult,
    InvalidEnrollment,
    means_none,
    parse_local_datetime,
    validate_enrollment,
)
from tests.conftest import enrollment_form
from tests.fakes.transport import ScriptedTransport

Enroll = Callable[..., EnrollmentResult]
NY = ZoneInfo("America/New_York")
# Tuesday 2026-03-03 15:00 in New York: the procedure is booked for Thursday 2026-03-12 09:00,
# warfarin to be stopped on the Saturday before (2026-03-07). Clocks spring forward on the 8th.
ENROLLED = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)
BOOKED = {
    "completed_at": "",
    "scheduled_at": "2026-03-12T09:00",
    "blood_thinner": "warfarin",
    "stop_blood_thinner_on": "2026-03-07",
}


def local(instant: datetime, tz: ZoneInfo = NY) -> str:
    return instant.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")


def ny(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY).astimezone(UTC)


def plan(session: so.Session, procedure_id: int) -> dict[str, tuple[str, str]]:
    session.expire_all()
    rows = session.scalars(
        sa.select(Message).where(Message.procedure_id == procedure_id).order_by(Message.due_at)
    )
    return {m.step: (local(m.due_at), m.status) for m in rows}


def send_due(
    session: so.Session, transport: ScriptedTransport, care: CareContext, at: datetime
) -> list[str]:
    """One plan + dispatch pass at `at`; the steps sent."""
    before = len(transport.sent)
    plan_procedures(session=session, care=care, now=at)
    session.commit()
    dispatch_due(session=session, transport=transport, care=care, clock=FakeClock(at), owner="test")
    session.commit()
    return [sms.step for sms in transport.sent[before:]]


def test_done_when_booked_thursday_with_warfarin_stopped_the_saturday_before(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    procedure = result.procedure
    assert procedure.status == "scheduled" and procedure.completed_at is None
    assert procedure.intro_step == "welcome"
    assert plan(session, procedure.id) == {
        "welcome": ("Tue 2026-03-03 15:00 EST", "pending"),
        "stop-blood-thinner": ("Fri 2026-03-06 10:00 EST", "pending"),
        "day-before": ("Wed 2026-03-11 16:00 EDT", "pending"),
    }
    # Tick through the week: each text at its moment, not a second earlier.
    timeline = {
        "2026-03-03T15:00": ["welcome"],
        "2026-03-06T09:59:59": [],
        "2026-03-06T10:00": ["stop-blood-thinner"],
        "2026-03-11T15:59:59": [],
        "2026-03-11T16:00": ["day-before"],
        "2026-03-12T09:30": [],  # booked, not finished: nothing after the procedure yet
    }
    for at, steps in timeline.items():
        assert send_due(session, transport, care, ny(at)) == steps, at
    bodies = {sms.step: sms.body for sms in transport.sent}
    assert bodies["welcome"].startswith("Riverside Spine Center: Welcome to Recovery Texts.")
    assert (
        "about 8 texts" in bodies["welcome"] and "Msg & data rates may apply" in bodies["welcome"]
    )
    assert "Stop taking your warfarin on Saturday, March 7" in bodies["stop-blood-thinner"]
    assert "(202) 555-0100" in bodies["stop-blood-thinner"]
    day_before = bodies["day-before"]
    assert "Your procedure is at 9:00 AM on Thursday, March 12." in day_before
    assert "sips of water, but not your warfarin" in day_before and "drive" in day_before

    # Finished at 10:30, recorded by the nurse at 11:15.
    clock.set(ny("2026-03-12T11:15"))
    complete_procedure(
        session=session,
        patient_id=result.patient.id,
        procedure_id=procedure.id,
        completed_at="2026-03-12T10:30",
        care=care,
        now=clock.now(),
        actor="nurse@example.org",
    )
    session.commit()
    after = plan(session, procedure.id)
    assert after == {
        "welcome": ("Tue 2026-03-03 15:00 EST", "sent"),
        "stop-blood-thinner": ("Fri 2026-03-06 10:00 EST", "sent"),
        "day-before": ("Wed 2026-03-11 16:00 EDT", "sent"),
        "no-driving": ("Thu 2026-03-12 11:15 EDT", "pending"),
        "soreness": ("Fri 2026-03-13 10:00 EDT", "pending"),
        "blood-thinner-restart": ("Sat 2026-03-14 10:30 EDT", "pending"),
        "warning-signs": ("Sun 2026-03-15 10:00 EDT", "pending"),
        "pain-check": ("Thu 2026-03-19 10:00 EDT", "pending"),
    }
    session.expire_all()
    restart = session.scalars(
        sa.select(Message).where(Message.step == "blood-thinner-restart")
    ).one()
    assert restart.due_at - ny("2026-03-12T10:30") == timedelta(hours=48)
    assert send_due(session, transport, care, ny("2026-03-12T11:15")) == ["no-driving"]
    # The welcome introduced the program: the no-driving text is the plain one.
    no_driving = transport.sent[-1].body
    assert "Do not drive for the rest of the day" in no_driving and "HELP" not in no_driving
    assert send_due(session, transport, care, ny("2026-03-13T10:00")) == ["soreness"]
    assert send_due(session, transport, care, ny("2026-03-14T10:29:59")) == []
    assert send_due(session, transport, care, ny("2026-03-14T10:30")) == ["blood-thinner-restart"]
    assert "restart your warfarin from 10:30 AM on Saturday, March 14." in transport.sent[-1].body


def test_finishing_before_the_pre_procedure_texts_went_out_cancels_them(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    # Nothing was dispatched (the welcome is still pending): finished early, on the 5th.
    clock.set(ny("2026-03-05T12:00"))
    messages = complete_procedure(
        session=session,
        patient_id=result.patient.id,
        procedure_id=result.procedure.id,
        completed_at="2026-03-05T11:00",
        care=care,
        now=clock.now(),
        actor="nurse",
    )
    session.commit()
    statuses = {m.step: m.status for m in messages}
    assert statuses["welcome"] == statuses["stop-blood-thinner"] == "cancelled"
    assert statuses["day-before"] == "cancelled"
    assert statuses["no-driving"] == "pending"
    reasons = session.scalars(
        sa.select(MessageEvent.detail).where(MessageEvent.kind == "cancelled")
    ).all()
    assert set(reasons) == {"procedure finished"}
    # No text reached the patient yet, so the first post-procedure text introduces the program.
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None and procedure.intro_step == "no-driving"
    body = care.render_text(
        kind="kyphoplasty", step_key="no-driving", language="en", tz=NY,
        completed_at=procedure.completed_at, blood_thinner="warfarin", intro=True,
    )  # fmt: skip
    assert "Reply HELP for help or STOP to end them. Msg & data rates may apply." in body
    assert "about 5 texts" in body


def test_a_patient_enrolled_after_the_procedure_gets_the_intro_on_the_first_text(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(datetime(2026, 3, 6, 20, 0, tzinfo=UTC))
    result = enroll(completed_at="2026-03-06T14:30")
    assert result.procedure.intro_step == "no-driving"
    assert "welcome" not in {m.step for m in result.messages}
    assert send_due(session, transport, care, clock.now()) == ["no-driving"]
    body = transport.sent[0].body
    assert body.startswith("Riverside Spine Center Recovery Texts: You had sedation today.")
    assert "about 4 texts" in body and "HELP" in body and "STOP" in body
    assert "Msg & data rates may apply" in body


def test_rescheduling_replans_the_texts_before_the_procedure(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    reschedule_procedure(
        session=session,
        patient_id=result.patient.id,
        procedure_id=result.procedure.id,
        scheduled_at="2026-03-19T13:00",
        stop_blood_thinner_on="2026-03-14",
        care=care,
        now=clock.now(),
        actor="nurse",
    )
    session.commit()
    assert plan(session, result.procedure.id) == {
        "welcome": ("Tue 2026-03-03 15:00 EST", "pending"),
        "stop-blood-thinner": ("Fri 2026-03-13 10:00 EDT", "pending"),
        "day-before": ("Wed 2026-03-18 16:00 EDT", "pending"),
    }
    # A new time alone keeps the stop date, and a stop date on or after the day is refused.
    with pytest.raises(ValidationError) as excinfo:
        reschedule_procedure(
            session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
            scheduled_at="2026-03-13T09:00", care=care, now=clock.now(), actor="nurse",
        )  # fmt: skip
    assert excinfo.value.field == "stop_blood_thinner_on"
    assert "before the day of the procedure" in excinfo.value.message


def test_cancelling_a_booked_procedure_cancels_its_texts(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    count = cancel_patient_procedure(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        now=clock.now(), actor="nurse",
    )  # fmt: skip
    session.commit()
    assert count == 3
    assert {status for _, status in plan(session, result.procedure.id).values()} == {"cancelled"}


def test_a_pre_procedure_text_never_goes_out_once_the_procedure_is_finished(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    # Someone marks it done behind the planner's back: the dispatcher's check still holds.
    session.execute(
        sa.update(Procedure)
        .where(Procedure.id == result.procedure.id)
        .values(status="completed", completed_at=ny("2026-03-05T09:00"))
    )
    session.commit()
    assert send_due(session, transport, care, ny("2026-03-06T10:00")) == []
    session.expire_all()
    stop = session.scalars(sa.select(Message).where(Message.step == "stop-blood-thinner")).one()
    assert stop.status == "cancelled"


def test_the_day_before_text_never_goes_out_after_the_booked_time(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Booked at 22:30 for 07:00 the next morning: the welcome waits for 08:00 and so do the
    # others, which is past the booked time: expired, never sent late.
    clock.set(ny("2026-03-04T22:30"))
    result = enroll(completed_at="", scheduled_at="2026-03-05T07:00")
    assert plan(session, result.procedure.id) == {
        "welcome": ("Thu 2026-03-05 08:00 EST", "expired"),
        "day-before": ("Thu 2026-03-05 08:00 EST", "expired"),
    }


@pytest.mark.parametrize(
    "none",
    ["none", "None.", "NONE", "nothing", "n/a", "N/A", "na", "-", "--", "ninguno", "Ninguna",
     "no blood thinner", "No blood thinners", "no", "nil", "not applicable", "Nada", "0",
     "none taken", "sin anticoagulante"],
)  # fmt: skip
def test_words_meaning_none_are_refused_as_a_name(care: CareContext, none: str) -> None:
    assert means_none(none)
    with pytest.raises(InvalidEnrollment) as excinfo:
        validate_enrollment(
            form=enrollment_form(takes_blood_thinner=True, blood_thinner=none),
            care=care, region="US", now=ENROLLED + timedelta(days=3),
        )  # fmt: skip
    assert excinfo.value.errors == {
        "blood_thinner": f"{' '.join(none.split())!r} means none: answer no to the "
        "blood-thinner question instead"
    }


@pytest.mark.parametrize("name", ["Eliquis", "warfarin", "aspirin 81 mg", "Noac", "Nonacog"])
def test_real_names_are_not_taken_for_none(name: str) -> None:
    assert not means_none(name)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"takes_blood_thinner": None}, "takes_blood_thinner", "yes or no"),
        ({"takes_blood_thinner": True, "blood_thinner": ""}, "blood_thinner", "is required"),
        (
            {"takes_blood_thinner": False, "blood_thinner": "Eliquis"},
            "blood_thinner",
            "must be empty",
        ),
        ({**BOOKED, "stop_blood_thinner_on": ""}, "stop_blood_thinner_on", "is required"),
        (
            {**BOOKED, "stop_blood_thinner_on": "2026-03-12"},
            "stop_blood_thinner_on",
            "before the day",
        ),
        ({**BOOKED, "stop_blood_thinner_on": "7 March"}, "stop_blood_thinner_on", "not a date"),
        ({"stop_blood_thinner_on": "2026-03-01"}, "stop_blood_thinner_on", "only for a booked"),
        (
            {"completed_at": "2026-03-02T10:00", "scheduled_at": "2026-03-12T09:00"},
            "scheduled_at",
            "not both",
        ),
        ({"completed_at": ""}, "completed_at", "is required"),
        (
            {"completed_at": "", "scheduled_at": "2026-03-02T10:00"},
            "scheduled_at",
            "not in the future",
        ),
        (
            {"completed_at": "2026-03-08T02:30"},
            "completed_at",
            "does not exist in America/New_York",
        ),
    ],
)
def test_enrollment_refusals_name_the_field_and_write_nothing(
    session: so.Session, care: CareContext, overrides: dict[str, object], field: str, words: str
) -> None:
    now = ny("2026-03-08T12:00")
    with pytest.raises(InvalidEnrollment) as excinfo:
        enroll_patient(
            session=session, form=enrollment_form(**overrides), care=care, region="US",
            now=now, actor="test",
        )  # fmt: skip
    session.rollback()
    assert field in excinfo.value.errors, excinfo.value.errors
    assert words in excinfo.value.errors[field]
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0


def test_an_ambiguous_time_is_refused_unless_its_offset_is_given(
    session: so.Session, care: CareContext
) -> None:
    now = ny("2026-11-01T12:00")  # the clocks went back at 02:00 this morning
    with pytest.raises(InvalidEnrollment) as excinfo:
        validate_enrollment(
            form=enrollment_form(completed_at="2026-11-01T01:30"), care=care, region="US", now=now
        )
    assert "happens twice" in excinfo.value.errors["completed_at"]
    choices = excinfo.value.choices["completed_at"]
    assert [(c.offset, c.zone_name) for c in choices] == [("-04:00", "EDT"), ("-05:00", "EST")]
    assert choices[1].instant - choices[0].instant == timedelta(hours=1)
    second = validate_enrollment(
        form=enrollment_form(completed_at="2026-11-01T01:30-05:00"), care=care, region="US", now=now
    )
    assert second.completed_at == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    with pytest.raises(AmbiguousTime) as ambiguous:
        parse_local_datetime("2026-11-01T01:30", NY, field="completed_at")
    assert ambiguous.value.field == "completed_at"


def test_preview_shows_both_zones_when_the_patient_is_elsewhere(
    session: so.Session, care: CareContext
) -> None:
    preview = preview_new_enrollment(
        session=session,
        form=enrollment_form(timezone="America/Chicago", **BOOKED),
        care=care,
        region="US",
        now=ENROLLED,
        clinic_timezone="America/New_York",
    )
    assert preview.completed_local == "Thu 2026-03-12 09:00 CDT (10:00 EDT at the clinic)"
    assert [row.step for row in preview.rows] == ["welcome", "stop-blood-thinner", "day-before"]
    assert preview.rows[0].intro and all(row.before_procedure for row in preview.rows)
    same = preview_new_enrollment(
        session=session, form=enrollment_form(**BOOKED), care=care, region="US", now=ENROLLED,
        clinic_timezone="America/New_York",
    )  # fmt: skip
    assert same.completed_local == "Thu 2026-03-12 09:00 EDT"


def test_completion_preview_lists_cancelled_and_planned_texts_and_writes_nothing(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    before = plan(session, result.procedure.id)
    preview = preview_completion_change(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at="2026-03-05T11:00", care=care, now=ny("2026-03-05T12:00"),
    )  # fmt: skip
    notes = {row.label: row.note for row in preview.rows}
    assert notes["Stop the blood thinner"] == "cancelled: procedure finished"
    assert notes["No driving today"] == "will be sent"
    assert notes["Restart the blood thinner"] == "will be sent"
    assert preview.title == "Confirm the procedure is finished"
    assert preview.completed_input == "2026-03-05T11:00-05:00"
    assert plan(session, result.procedure.id) == before


def test_a_welcome_whose_outcome_is_unknown_never_goes_out_after_the_procedure(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    # The welcome's request times out (Twilio may or may not have taken it), and the
    # procedure is done before the reaper asks Twilio. Twilio does not have it: the welcome
    # must not arrive after the procedure, and the first text after it carries the intro.
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    transport.outcomes = [TransientSendError("timeout", "no answer", maybe_sent=True)]
    assert send_due(session, transport, care, ENROLLED) == []
    welcome = session.scalars(sa.select(Message).where(Message.step == "welcome")).one()
    assert (welcome.status, welcome.handed_at is not None) == ("sending", True)

    done = ENROLLED + timedelta(minutes=2)
    preview = preview_completion_change(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at=local_input(done - timedelta(minutes=1)), care=care, now=done,
    )  # fmt: skip
    notes = {row.label: row.note for row in preview.rows}
    assert notes["Welcome"] == (
        "being sent now; if it does not reach the patient, it is not sent again: procedure finished"
    )
    complete_procedure(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at=local_input(done - timedelta(minutes=1)), care=care, now=done,
        actor="nurse",
    )  # fmt: skip
    session.commit()
    session.expire_all()
    assert (welcome.status, welcome.expires_at) == ("sending", done)
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None and procedure.intro_step == "no-driving"

    transport.provider_has = []
    later = done + timedelta(minutes=10)
    report = reap_stale(session=session, transport=transport, now=later)
    assert (report.expired, report.requeued) == (1, 0)
    session.expire_all()
    assert welcome.status == "expired"
    for at in (later, later + timedelta(hours=1), ny("2026-03-04T10:00")):
        send_due(session, transport, care, at)
    assert "welcome" not in transport.steps_sent()
    [no_driving] = [sms for sms in transport.sent if sms.step == "no-driving"]
    assert "Reply HELP for help or STOP to end them." in no_driving.body


def local_input(instant: datetime) -> str:
    return instant.astimezone(NY).strftime("%Y-%m-%dT%H:%M")
