"""The reaper asks Twilio about a closed copy a stalled request of which may be at Twilio:
edges of that (two late answers of one copy, a START while it is being asked)."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import is_postgresql
from followup.messaging.dispatch import Dispatcher
from followup.messaging.handover import Answer
from followup.messaging.models import Message
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import record_opt_out
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.tick import run_tick
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from followup.patients.edits import complete_procedure
from followup.patients.models import Patient
from followup.runtime import Runtime
from jobs import tasks
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    at,
    correct_end,
    dispatch,
    event_details,
    requeued_mid_request,
    stop_closes_the_requeued_copy,
    text,
)


class ListsLate(ScriptedTransport):
    """Like Twilio: `find_sent` compares each text's creation time with `since`, and lists
    nothing until `listing` is set. The first request reaches Twilio but its answer times
    out; the second does not reach it (timed out before); the rest go through."""

    def __init__(self) -> None:
        super().__init__()
        self.listing = False
        self.created: list[tuple[str, str, str, datetime]] = []
        self.calls = 0

    def send(self, sms: OutgoingSms) -> SendResult:
        self.calls += 1
        if self.calls == 2:
            raise TransientSendError("timeout", "no answer", maybe_sent=True)
        result = super().send(sms)
        self.created.append((sms.to, sms.body, result.provider_sid, sms.now))
        if self.calls == 1:
            raise TransientSendError("timeout", "no answer", maybe_sent=True)
        return result

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        if not self.listing:
            return None
        for have_to, have_body, sid, created in self.created:
            if (have_to, have_body) == (to, body) and created >= since and sid not in exclude:
                return SendResult(provider_sid=sid, provider_status="sent")
        return None


@contextmanager
def requeued_twice_then_stop(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    transport: ListsLate,
    enroll: Enroll,
) -> Iterator[tuple[tuple[DispatchPass, Answer], tuple[DispatchPass, Answer], so.Session]]:
    """w1's request (15:00) reached Twilio; w1 stalled, and the reaper, which Twilio did
    not list it to yet, requeued the text. w2 sent it again at 15:06 (that request never
    reached Twilio) and stalled too; requeued again; then a STOP closed the copy. Yields
    both stalled dispatchers' passes with their late answers (not recorded yet), and w2's
    session."""
    with (
        requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
            turn1,
            answer1,
        ),
        session_factory() as session2,
        Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as w2,
    ):
        clock.set(answer1.at + timedelta(minutes=6))
        turn2 = DispatchPass(w2, session2, DispatchReport(), None)
        assert turn2.claim()
        session2.commit()
        group = list(turn2.ready)
        turn2.ready.clear()
        turn2.start_calls(turn2.hand_over(group))
        session2.commit()
        answer2 = turn2.answers.get(timeout=5)
        assert answer2.at > answer1.at + timedelta(minutes=5)
        clock.set(clock.now() + timedelta(minutes=3))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        patient_id = text(session, "no-driving").patient_id
        record_opt_out(
            session=other_session, patient_id=patient_id, now=clock.now(), reason="STOP: opted out"
        )
        other_session.commit()
        yield (turn1, answer1), (turn2, answer2), session2


def record_late(turn: DispatchPass, answer: Answer, session: so.Session) -> None:
    turn.answers.put(answer)
    turn.outcomes.record(turn.collect())
    session.commit()


def test_two_late_answers_of_one_closed_copy_ask_twilio_from_the_earlier_request(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Both late answers come, w1's first. The reaper must ask Twilio from w1's request on,
    # or it looks past the text the patient has, and START sends it a second time.
    transport = ListsLate()
    with requeued_twice_then_stop(
        session, other_session, session_factory, care, clock, transport, enroll
    ) as ((turn1, answer1), (turn2, answer2), session2):
        record_late(turn1, answer1, session)
        record_late(turn2, answer2, session2)
    message = text(session, "no-driving")
    assert message.status == "cancelled" and message.lease_expires_at is not None
    transport.listing = True
    clock.set(message.lease_expires_at + timedelta(seconds=1))
    report = reap_stale(session=other_session, transport=transport, now=clock.now())
    message = text(session, "no-driving")
    assert (report.reconciled, message.status, message.provider_sid) == (
        1,
        "sent",
        transport.created[0][2],
    )
    record_opt_in(session=other_session, patient_id=message.patient_id, care=care, now=clock.now())
    other_session.commit()
    dispatch(session, transport, care, clock.now())
    assert len(transport.sent) == 1  # w1's, once


def test_two_late_answers_of_one_closed_copy_later_one_first(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # As above, w2's answer first: the earlier request still counts.
    transport = ListsLate()
    with requeued_twice_then_stop(
        session, other_session, session_factory, care, clock, transport, enroll
    ) as ((turn1, answer1), (turn2, answer2), session2):
        record_late(turn2, answer2, session2)
        record_late(turn1, answer1, session)
    message = text(session, "no-driving")
    assert message.handed_at == answer1.at
    transport.listing = True
    clock.set(message.lease_expires_at + timedelta(seconds=1))  # type: ignore[operator]
    assert reap_stale(session=other_session, transport=transport, now=clock.now()).reconciled == 1
    assert text(session, "no-driving").status == "sent"


def _marked_after_stop(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ListsLate,
) -> int:
    """15:00: no-driving's request stalled (it never reached Twilio) and was requeued; a
    STOP closed the copy before the late answer came, which marked it for the reaper.
    Returns the patient's id."""
    transport.calls = 1  # the stalled request never reached Twilio
    patient_id, answer = stop_closes_the_requeued_copy(
        session, other_session, care, clock, transport, enroll
    )
    return patient_id


def _start_while_marked(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> tuple[ListsLate, Message]:
    """The copy marked after the STOP (`_marked_after_stop`); the patient texts START
    before the reaper asks Twilio, and START passes the copy over."""
    transport = ListsLate()
    patient_id = _marked_after_stop(session, other_session, care, clock, enroll, transport)
    record_opt_in(session=other_session, patient_id=patient_id, care=care, now=clock.now())
    other_session.commit()
    message = text(session, "no-driving")
    assert (message.status, message.lease_owner is not None) == ("cancelled", True)
    transport.listing = True
    return transport, message


def test_a_start_while_a_closed_copy_waits_to_be_asked_still_sends_it_once_not_at_twilio(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    runtime: Runtime,
) -> None:
    # The worker's reap job (what serve and worker run every 20 s) applies START's rule.
    transport, message = _start_while_marked(session, other_session, care, clock, enroll)
    clock.set(message.lease_expires_at + timedelta(seconds=1))  # type: ignore[operator]
    tasks.reap(replace(runtime, transport=transport))
    assert event_details(session, message.id, "requeued")[-1] == (
        "not at provider; the patient opted back in: send again"
    )
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]
    dispatch(session, transport, care, clock.now() + timedelta(minutes=5))
    assert transport.steps_sent() == ["no-driving"]  # once


class AsksSlowly(ListsLate):
    """Once `slow` is set, Twilio's listing takes a while: `asking` is set when the reaper
    asks, and the answer comes once `answer` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.asking = threading.Event()
        self.answer = threading.Event()

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        if self.slow:
            self.asking.set()
            assert self.answer.wait(timeout=10)
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def test_a_start_committed_while_the_reaper_asks_about_a_closed_copy_still_sends_it(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The patient texts START while the reaper is asking Twilio about the marked copy.
    # START passes the copy over (it might be at Twilio) and commits just after the reaper
    # has read whether the patient opted back in, while its write waits for START's locks.
    # Twilio does not have the copy: START's rule must apply to it (no-driving, in its
    # window, carrying the intro), not "stays cancelled" read before START committed.
    transport = AsksSlowly()
    patient_id = _marked_after_stop(session, other_session, care, clock, enroll, transport)
    transport.listing = transport.slow = True
    message = text(session, "no-driving")
    clock.set(message.lease_expires_at + timedelta(seconds=1))  # type: ignore[operator]
    failures: list[BaseException] = []

    def reaper() -> None:
        with session_factory() as reaper_session:
            try:
                reap_stale(session=reaper_session, transport=transport, now=clock.now(), care=care)
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                failures.append(exc)

    thread = threading.Thread(target=reaper)
    thread.start()
    assert transport.asking.wait(timeout=10)
    record_opt_in(session=other_session, patient_id=patient_id, care=care, now=clock.now())
    transport.answer.set()
    time.sleep(0.5)  # the reaper reads, then waits for START's locks
    other_session.commit()
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    assert event_details(session, message.id, "requeued")[-1] == (
        "not at provider; the patient opted back in: send again"
    )
    # Two passes: on a loaded machine a worker thread may start the call more than
    # HANDOVER_MAX_WAIT after its guard, and the first pass then puts it back unsent.
    for instant in (clock.now(), clock.now() + timedelta(seconds=5)):
        dispatch(session, transport, care, instant)
    assert transport.steps_sent() == ["no-driving"]
    assert "Reply HELP" in transport.sent[0].body


def test_a_closed_copy_found_missing_after_a_correction_keeps_starts_window_not_its_old_one(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # While the copy waits to be asked, a nurse corrects the procedure's end to the day
    # before (the date was wrong): no-driving's window ("day 0 at 21:00") closed yesterday.
    # START, had it known Twilio does not have the copy, would plan it from the procedure's
    # times and leave it cancelled; the reaper must not send it with its old window.
    transport, message = _start_while_marked(session, other_session, care, clock, enroll)
    correct_end(other_session, care, message.procedure_id, "2026-03-05T14:30", clock.now())
    clock.set(message.lease_expires_at + timedelta(seconds=1))  # type: ignore[operator]
    reap_stale(session=other_session, transport=transport, now=clock.now(), care=care)
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["welcome", "soreness"]  # the intro, then day 1's text
    assert [sms.step for sms in transport.sent if "Reply HELP" in sms.body] == ["welcome"]
    assert text(session, "no-driving").status == "cancelled"


def test_a_closed_intro_copy_found_missing_after_its_window_hands_the_intro_on(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # START counted the marked no-driving copy as having carried the intro (it might have
    # been at Twilio). The reaper gets to ask only after no-driving's window closed (21:00):
    # Twilio does not have it, so it stays cancelled, and some other text must carry HELP,
    # STOP and the rates; the next day's texts must not go without them.
    transport, message = _start_while_marked(session, other_session, care, clock, enroll)
    clock.set(at("2026-03-06T21:30"))
    reap_stale(session=other_session, transport=transport, now=clock.now(), care=care)
    assert text(session, "no-driving").status == "cancelled"
    for instant in ("2026-03-07T08:00", "2026-03-07T10:00", "2026-03-09T10:00"):
        clock.set(at(instant))
        run_tick(session=session, transport=transport, care=care, clock=clock, owner="w9")
    assert transport.steps_sent() == ["welcome", "soreness", "warning-signs"]
    assert [sms.step for sms in transport.sent if "Reply HELP" in sms.body] == ["welcome"]


class FailedAtTwilio(ListsLate):
    """The stalled request reached Twilio after the STOP: Twilio lists it failed, 21610."""

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        found = super().find_sent(to=to, body=body, since=since, exclude=exclude)
        return None if found is None else replace(found, provider_status="failed", error_code=21610)


def test_a_closed_copy_found_failed_for_the_stop_does_not_undo_the_start_since(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Twilio failed the copy with 21610 because of the STOP that closed it; the patient has
    # texted START since. The failure and its code are recorded, but the START stands: the
    # patient is not opted out again, and their texts still go.
    transport = FailedAtTwilio()
    patient_id, answer = stop_closes_the_requeued_copy(
        session, other_session, care, clock, transport, enroll
    )
    record_opt_in(session=other_session, patient_id=patient_id, care=care, now=clock.now())
    other_session.commit()
    message = text(session, "no-driving")
    transport.listing = True
    clock.set(message.lease_expires_at + timedelta(seconds=1))  # type: ignore[operator]
    reap_stale(session=other_session, transport=transport, now=clock.now(), care=care)
    message = text(session, "no-driving")
    assert (message.status, message.error_code) == ("failed", "21610")
    patient = session.get(Patient, patient_id)
    assert patient is not None
    session.refresh(patient)
    assert patient.opted_out_at is None
    assert text(session, "soreness").status == "pending"


def test_the_reaper_and_a_nurse_finishing_the_procedure_at_once_do_not_deadlock(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    engine: sa.Engine,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # A booked procedure's welcome stalled, was requeued, closed by a STOP and marked; the
    # patient texted START. The reaper finds it missing at Twilio and locks the patient,
    # then the procedure; a nurse marks the procedure finished at that moment: her edit
    # holds the procedure and inserts the texts after it, whose foreign key to the patient
    # takes a key-share lock on the patient's row. A FOR UPDATE on the patient blocks that
    # lock: each would wait for the other.
    if not is_postgresql(session):
        pytest.skip("row locks and deadlock detection are PostgreSQL's; SQLite has one writer")
    transport = ListsLate()
    transport.calls = 1  # the stalled request never reached Twilio
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    patient_id, procedure_id = result.patient.id, result.procedure.id
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as w1:
        turn = DispatchPass(w1, session, DispatchReport(), None)
        assert turn.claim()
        session.commit()
        group = list(turn.ready)
        turn.ready.clear()
        turn.start_calls(turn.hand_over(group))
        session.commit()
        answer = turn.answers.get(timeout=5)
        clock.set(clock.now() + timedelta(minutes=2))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        record_opt_out(
            session=other_session, patient_id=patient_id, now=clock.now(), reason="STOP: opted out"
        )
        other_session.commit()
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
    record_opt_in(session=other_session, patient_id=patient_id, care=care, now=clock.now())
    other_session.commit()
    welcome = text(session, "welcome")
    assert (welcome.status, welcome.lease_owner is not None) == ("cancelled", True)
    transport.listing = True
    clock.set(welcome.lease_expires_at + timedelta(seconds=1))  # type: ignore[operator]

    errors: list[tuple[str, BaseException]] = []
    nurse_started = threading.Event()
    reaper_thread: list[threading.Thread] = []

    def nurse() -> None:
        with session_factory() as nurse_session:
            try:
                complete_procedure(
                    session=nurse_session, patient_id=patient_id, procedure_id=procedure_id,
                    completed_at="2026-03-06T15:00", care=care, now=clock.now(), actor="nurse",
                )  # fmt: skip
                nurse_session.commit()
            except Exception as exc:  # noqa: BLE001 - the test reports it
                errors.append(("nurse", exc))

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The reaper holds the patient; the nurse's edit comes before it locks the procedure.
        if (
            threading.current_thread() in reaper_thread
            and "FROM procedures" in statement
            and "FOR" in statement
            and not nurse_started.is_set()
        ):
            nurse_started.set()
            threading.Thread(target=nurse, name="nurse").start()
            time.sleep(0.5)  # long enough for her to take every lock she can

    def reaper() -> None:
        with session_factory() as reaper_session:
            try:
                reap_stale(session=reaper_session, transport=transport, now=clock.now(), care=care)
            except Exception as exc:  # noqa: BLE001 - the test reports it
                errors.append(("reaper", exc))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        reaper_thread.append(threading.Thread(target=reaper, name="reaper"))
        reaper_thread[0].start()
        reaper_thread[0].join(timeout=30)
        for thread in threading.enumerate():
            if thread.name == "nurse":
                thread.join(timeout=30)
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    assert nurse_started.is_set() and errors == []
    # Twilio never had the welcome: the text after the procedure introduces the program.
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]
    assert "Reply HELP" in transport.sent[0].body
