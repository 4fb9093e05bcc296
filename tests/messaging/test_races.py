"""A nurse's change racing the dispatcher: whatever commits first, nothing goes out that the
change forbids, and nothing goes out earlier than the change says.

Each race is made deterministic by committing the change from a second session at the
exact point where the dispatcher is between two of its statements.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

import followup.messaging.turns as turns_module
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import is_postgresql
from followup.messaging.claims import claim_due
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import Message
from followup.messaging.reports import DispatchReport
from followup.messaging.text_state import procedure_messages
from followup.messaging.transports.base import TransientSendError
from followup.messaging.turns import DispatchPass
from followup.patients.edits import (
    cancel_procedure,
)
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    at,
    correct_end,
    dispatch,
    history,
    no_driving_claimed,
    restart_due_now,
    text,
)


def test_a_procedure_cancelled_between_the_hand_over_read_and_its_guard_is_not_texted(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")  # the no-driving text is due now
    render = turns_module.render_message
    cancelled: list[int] = []

    def render_while_a_nurse_cancels(*args: Any, **kwargs: Any) -> str:
        if not cancelled:  # the dispatcher has read the text; its guard is still to come
            cancelled.append(
                cancel_procedure(
                    session=other_session,
                    procedure_id=result.procedure.id,
                    now=clock.now(),
                    actor="nurse@example.org",
                )
            )
            other_session.commit()
        return render(*args, **kwargs)

    monkeypatch.setattr(turns_module, "render_message", render_while_a_nurse_cancels)
    # Claimed and committed in one turn, handed over in a later one (as when texts wait
    # for the rate limit): on SQLite only then is the read outside a write transaction.
    ids = claim_due(session=session, now=clock.now(), owner="w1", limit=10)
    session.commit()
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        guarded = turn.hand_over(ids)
        session.commit()

    # The nurse's cancel took the procedure's pending texts; the claimed one was the
    # dispatcher's, and only its guard could stop it.
    assert len(cancelled) == 1 and cancelled[0] > 0
    assert guarded == [] and transport.sent == []
    assert turn.report.returned == 1
    # Handed back at once, not held for a lease: the next pass cancels it.
    assert text(session, "no-driving").status == "pending"
    monkeypatch.setattr(turns_module, "render_message", render)
    report = dispatch(session, transport, care, clock.now())
    assert transport.sent == [] and report.cancelled == 1
    assert text(session, "no-driving").status == "cancelled"
    assert history(session, "no-driving") == [
        "planned",
        "claimed",
        "requeued",
        "claimed",
        "cancelled",
    ]


def test_a_text_moved_later_between_the_claims_read_and_its_update_is_not_claimed(
    session: so.Session,
    other_session: so.Session,
    engine: sa.Engine,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    if is_postgresql(session):
        pytest.skip("on PostgreSQL the claim's read locks the rows it returns (SKIP LOCKED)")
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    tomorrow = clock.now() + timedelta(hours=20)

    moved: list[bool] = []

    def move_it_later_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # SQLite's read held no lock: another process re-plans the text just before the
        # claim's UPDATE.
        claim = statement.startswith("UPDATE messages SET status") and "claimed_at" in statement
        if claim and not moved:
            moved.append(True)
            other_session.execute(
                sa.update(Message).where(Message.step == "no-driving").values(due_at=tomorrow)
            )
            other_session.commit()

    sa.event.listen(engine, "before_cursor_execute", move_it_later_first)
    try:
        claimed = claim_due(session=session, now=clock.now(), owner="w1", limit=10)
        session.commit()
    finally:
        sa.event.remove(engine, "before_cursor_execute", move_it_later_first)

    assert moved and claimed == []
    message = text(session, "no-driving")
    assert (message.status, message.due_at) == ("pending", tomorrow)
    dispatch(session, transport, care, clock.now())
    assert transport.sent == []


def test_a_completion_time_corrected_while_a_text_is_claimed_replans_it_and_it_waits(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # The blood-thinner restart falls due 48 h after 14:30; a dispatcher has claimed it
    # when a nurse corrects the procedure's end to 16:30: it must wait until 16:30.
    procedure_id, old_due, new_due = restart_due_now(session, transport, care, clock, enroll)
    clock.set(old_due)
    claimed = claim_due(session=session, now=old_due, owner="w1", limit=10)
    session.commit()
    restart = text(session, "blood-thinner-restart")
    assert claimed == [restart.id] and restart.status == "sending"

    correct_end(other_session, care, procedure_id, "2026-03-06T16:30", old_due)

    restart = text(session, "blood-thinner-restart")
    assert (restart.status, restart.due_at, restart.lease_owner) == ("pending", new_due, None)
    # The dispatcher that claimed it hands nothing over: the text is no longer its own.
    report = dispatch(session, transport, care, old_due)
    assert transport.sent == [] and report.sent == 0
    dispatch(session, transport, care, new_due - timedelta(seconds=1))
    assert transport.sent == []
    dispatch(session, transport, care, new_due)
    assert [sms.step for sms in transport.sent] == ["blood-thinner-restart"]
    assert transport.sent[-1].now == new_due
    assert "from 5:30 PM on Sunday" in transport.sent[-1].body


def test_a_replans_read_keeps_dispatchers_off_the_procedures_texts_until_it_commits(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    procedure_messages(session=other_session, procedure_id=result.procedure.id, lock=True)
    try:
        if is_postgresql(session):
            # The rows are locked: a dispatcher's claim skips them.
            assert claim_due(session=session, now=clock.now(), owner="w1", limit=10) == []
            session.rollback()
        else:
            # The database's write lock is taken: no dispatcher can write meanwhile.
            session.connection().exec_driver_sql("PRAGMA busy_timeout = 100")
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                claim_due(session=session, now=clock.now(), owner="w1", limit=10)
            session.rollback()
    finally:
        other_session.rollback()
    assert claim_due(session=session, now=clock.now(), owner="w1", limit=10) != []
    session.commit()


def test_a_text_replanned_and_claimed_again_while_it_waited_is_handed_over_once(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, result):
        first_claim = list(turn.ready)
        # While it waits for a slot, a nurse corrects the end by five minutes: the text is
        # re-planned (still due now) and this dispatcher claims it again.
        correct_end(other_session, care, result.procedure.id, "2026-03-06T14:25", clock.now())
        assert turn.claim()
        session.commit()
        assert list(turn.ready) == first_claim  # queued once
        # Even a stale copy of the id cannot be handed over a second time, nor released
        # while its call is under way.
        handed = turn.hand_over(first_claim)
        session.commit()
        again = turn.hand_over(first_claim)
        session.commit()
        turn.start_calls(handed)
        answer = turn.answers.get(timeout=5)

    assert [item.id for item in handed] == first_claim and again == []
    assert answer.item.id == first_claim[0]
    assert transport.steps_sent() == ["no-driving"]
    message = text(session, "no-driving")
    assert message.status == "sending" and message.handed_at is not None  # answer unrecorded
    assert turn.report.claimed == 1


def test_a_retry_waiting_when_the_completion_time_is_corrected_follows_the_new_time(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # The blood-thinner restart is refused for now at 48 h (Twilio busy); before its retry
    # a nurse corrects the end of the procedure two hours later: the retry waits for the
    # new 48 h mark instead of going out at the old one.
    procedure_id, old_due, new_due = restart_due_now(session, transport, care, clock, enroll)
    transport.outcomes = [TransientSendError("20429", "Too Many Requests", retry_after=60)]
    assert dispatch(session, transport, care, old_due).retried == 1
    restart = text(session, "blood-thinner-restart")
    assert (restart.status, restart.attempts) == ("pending", 1)
    assert restart.not_before is not None and restart.not_before < new_due

    correct_end(session, care, procedure_id, "2026-03-06T16:30", old_due + timedelta(seconds=10))

    restart = text(session, "blood-thinner-restart")
    assert (restart.status, restart.due_at, restart.not_before) == ("pending", new_due, None)
    assert restart.attempts == 1  # the count of tries is kept
    for now in (old_due + timedelta(minutes=2), new_due - timedelta(seconds=1)):
        dispatch(session, transport, care, now)
    assert transport.sent == []
    dispatch(session, transport, care, new_due)
    assert [sms.step for sms in transport.sent] == ["blood-thinner-restart"]
    assert transport.sent[-1].now == new_due


def test_a_retry_replanned_to_now_still_waits_for_its_backoff(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # Twilio asked for ten minutes; a nurse's five-minute correction leaves the text due
    # now: it still waits the ten minutes.
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T15:00")
    transport.outcomes = [TransientSendError("20429", "Too Many Requests", retry_after=600)]
    assert dispatch(session, transport, care, at("2026-03-06T15:00")).retried == 1
    backoff = text(session, "no-driving").not_before
    assert backoff is not None and backoff >= at("2026-03-06T15:10")

    correct_end(session, care, result.procedure.id, "2026-03-06T14:55", at("2026-03-06T15:00:10"))

    message = text(session, "no-driving")
    assert (message.status, message.due_at, message.not_before) == (
        "pending",
        at("2026-03-06T15:00:10"),
        backoff,
    )
    dispatch(session, transport, care, backoff - timedelta(seconds=1))
    assert transport.sent == []
    dispatch(session, transport, care, backoff)
    assert transport.steps_sent() == ["no-driving"]
