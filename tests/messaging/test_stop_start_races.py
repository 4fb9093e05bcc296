"""STOP and START against each other and against texts in flight.

Two replies of one patient handled at once (two webhook requests: Twilio posts each reply
as it comes, and a STOP's transaction may wait for a dispatcher's row locks): the later
reply must win, as it does at Twilio."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import parse_clinic_hours
from followup.clock import FakeClock
from followup.messaging import turns
from followup.messaging.models import CANCELLED, PENDING, SENT
from followup.messaging.replies import record_inbound
from followup.patients.models import Patient
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, dispatch, messages, no_driving_claimed

PHONE = "+12025550143"
HOURS = parse_clinic_hours("Mon-Fri 08:00-17:00")


def reply(session: so.Session, care: CareContext, body: str, sid: str, now: datetime) -> None:
    """The patient's reply, as the inbound webhook records it (not committed)."""
    record_inbound(
        session=session,
        provider_sid=sid,
        from_phone=PHONE,
        body=body,
        opt_out_type=None,
        care=care,
        clinic_hours=HOURS,
        clinic_zone="America/New_York",
        now=now,
    )


@contextmanager
def second_reply_while_first_is_open(
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    body: str,
    sid: str,
    now: datetime,
) -> Iterator[threading.Thread]:
    """A second webhook request records `body` in its own session and commits, on another
    thread; the caller's block runs once that request has read the patient and is storing
    the reply (the first request's transaction still open). Joined on exit."""
    storing = threading.Event()
    errors: list[BaseException] = []

    def mark(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO INBOUND_MESSAGES"):
            storing.set()

    def work() -> None:
        try:
            with session_factory() as other:
                reply(other, care, body, sid, now)
                other.commit()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)
            storing.set()

    sa.event.listen(engine, "before_cursor_execute", mark)
    thread = threading.Thread(target=work)
    try:
        thread.start()
        assert storing.wait(20), "the second reply was never stored"
        yield thread
        thread.join(40)
        assert not thread.is_alive()
    finally:
        sa.event.remove(engine, "before_cursor_execute", mark)
    if errors:
        raise errors[0]


def opted_out_at(session: so.Session, patient_id: int) -> datetime | None:
    session.expire_all()
    patient = session.get(Patient, patient_id)
    assert patient is not None
    return patient.opted_out_at


def test_a_stop_handled_while_the_patients_start_is_being_recorded_still_opts_them_out(
    session: so.Session,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    dispatch(session, transport, care, clock.now())
    assert messages(session)["no-driving"].status == SENT
    reply(session, care, "STOP", "SM" + "1" * 32, clock.now())
    session.commit()
    # Ten minutes later the patient texts START, then, a second after it, STOP again; the
    # START's request is still writing when the STOP's request reads the patient.
    clock.advance(timedelta(minutes=10))
    start_at = clock.now()
    with session_factory() as first:
        reply(first, care, "START", "SM" + "2" * 32, start_at)
        with second_reply_while_first_is_open(
            engine, session_factory, care, "STOP", "SM" + "3" * 32, start_at + timedelta(seconds=1)
        ):
            first.commit()
    # The patient's last word was STOP: opted out, nothing of theirs left to go.
    assert opted_out_at(session, result.patient.id) is not None
    assert {step: m.status for step, m in messages(session).items() if m.status == PENDING} == {}
    later = ScriptedTransport()
    dispatch(session, later, care, at("2026-03-07T11:00"))
    assert later.steps_sent() == []


def test_a_start_handled_while_the_patients_stop_is_being_recorded_brings_the_texts_back(
    session: so.Session,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    dispatch(session, transport, care, clock.now())
    # STOP by mistake, START a second later; the STOP's request is still writing when the
    # START's request reads the patient.
    stop_at = clock.now() + timedelta(minutes=10)
    with session_factory() as first:
        reply(first, care, "STOP", "SM" + "1" * 32, stop_at)
        with second_reply_while_first_is_open(
            engine, session_factory, care, "START", "SM" + "2" * 32, stop_at + timedelta(seconds=1)
        ):
            first.commit()
    # The patient's last word was START: opted in, the day-1 text back in the queue.
    assert opted_out_at(session, result.patient.id) is None
    texts = messages(session)
    assert texts["soreness"].status == PENDING, texts["soreness"].status
    assert CANCELLED not in {m.status for m in texts.values()}


def test_a_start_committed_while_the_dispatcher_decides_a_claimed_text_does_not_lose_it(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, result):
        # STOP, then START a few seconds later, while the no-driving text is claimed: the
        # dispatcher reads it (and its patient, opted out) just before the START commits.
        reply(other_session, care, "STOP", "SM" + "1" * 32, clock.now())
        other_session.commit()
        decide = turns.reason_not_to_send

        def read_before_start(**kwargs):  # type: ignore[no-untyped-def]
            reason = decide(**kwargs)
            reply(other_session, care, "START", "SM" + "2" * 32, clock.now())
            other_session.commit()
            return reason

        monkeypatch.setattr(turns, "reason_not_to_send", read_before_start)
        group = list(turn.ready)
        turn.ready.clear()
        turn.start_calls(turn.hand_over(group))
        session.commit()
        monkeypatch.setattr(turns, "reason_not_to_send", decide)
    assert opted_out_at(session, result.patient.id) is None
    # The patient is opted in: the text, due now, goes (its window is open for hours).
    later = ScriptedTransport()
    dispatch(session, later, care, clock.now() + timedelta(minutes=1))
    assert later.steps_sent() == ["no-driving"], messages(session)["no-driving"].status


@pytest.mark.parametrize(("first", "then"), [("STOP", "START"), ("START", "STOP")])
def test_the_patients_later_reply_wins_when_its_request_got_the_patient_first(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
    first: str,
    then: str,
) -> None:
    # Two replies a second apart, their webhook requests overlapping: the later reply's
    # request takes the patient's row first and is handled first, the earlier one's after
    # it. The earlier reply must not undo the later: the patient's last word stands, as it
    # does at Twilio.
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    if first == "START":  # opted out before: the START is to bring them back
        reply(session, care, "STOP", "SM" + "1" * 32, clock.now() - timedelta(minutes=10))
        session.commit()
    earlier = clock.now()
    reply(session, care, then, "SM" + "3" * 32, earlier + timedelta(seconds=1))
    session.commit()
    reply(session, care, first, "SM" + "2" * 32, earlier)
    session.commit()
    if then == "START":
        assert opted_out_at(session, result.patient.id) is None
        assert messages(session)["no-driving"].status == PENDING
        dispatch(session, transport, care, clock.now() + timedelta(seconds=2))
        assert transport.steps_sent() == ["no-driving"]
    else:
        assert opted_out_at(session, result.patient.id) is not None
        assert messages(session)["no-driving"].status == CANCELLED


def test_an_overtaken_spanish_stop_is_not_confirmed_to_the_patient(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # PARAR, then START a second later; START's request was handled first. The PARAR
    # changes nothing, so followup does not tell the patient they will get no more texts.
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30", language="es")
    earlier = clock.now()
    reply(session, care, "START", "SM" + "3" * 32, earlier + timedelta(seconds=1))
    session.commit()
    parar = record_inbound(
        session=session, provider_sid="SM" + "2" * 32, from_phone=PHONE, body="PARAR",
        opt_out_type=None, care=care, clinic_hours=HOURS, clinic_zone="America/New_York",
        now=earlier,
    )  # fmt: skip
    session.commit()
    assert parar.reply is None
    assert (parar.inbound.answer_kind, parar.inbound.answer_body) == (None, None)
    assert opted_out_at(session, result.patient.id) is None
