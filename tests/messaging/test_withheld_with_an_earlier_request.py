"""A text withheld at its call (its window re-opened by a correction, quiet hours, a late
start) whose earlier request may be at Twilio waits for the reaper to ask, not the queue."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import SENT
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    correct_end,
    listed_then_settled,
    restart_due_now,
    text,
)


class TakenButTimedOut(ScriptedTransport):
    """Like Twilio: while `time_out` is set, a request reaches Twilio (which takes the
    text) but its answer times out; `find_sent` lists what Twilio created since `since`,
    nothing until `listing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.time_out = False
        self.listing = False
        self.created: list[tuple[str, str, str, datetime]] = []

    def send(self, sms: OutgoingSms) -> SendResult:
        result = super().send(sms)
        self.created.append((sms.to, sms.body, result.provider_sid, sms.now))
        if self.time_out:
            self.time_out = False
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


def _withheld_while_an_earlier_request_is_at_twilio(
    *,
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    correct_to: str | None,
) -> None:
    """w1 sends the restart text 5 minutes before its window closes; Twilio takes it, the
    answer times out and w1 stalls. Past w1's lease the reaper asks Twilio, which does not
    list it yet, and requeues it. w2 claims it 3 s before the window closes and guards it;
    w1's late answer is then recorded: the text (w2's now) is marked to be asked about
    from w1's request on. With `correct_to`, a nurse then corrects the end (the text,
    handed over, is re-timed). w2's worker, on the old window, withholds it. Then Twilio
    lists what it has, and the reaper and dispatcher run for 20 minutes: the text must
    end recorded `sent` with w1's SID, created at Twilio once."""
    transport = TakenButTimedOut()
    procedure_id, _, _ = restart_due_now(session, transport, care, clock, enroll)
    transport.created.clear()
    old_expiry = text(session, "blood-thinner-restart").expires_at

    transport.time_out = True
    clock.set(old_expiry - timedelta(minutes=5))
    with (
        Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as w1,
        session_factory() as session2,
        Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as w2,
    ):
        turn1 = DispatchPass(w1, session, DispatchReport(), None)
        assert turn1.claim()
        session.commit()
        group = list(turn1.ready)
        turn1.ready.clear()
        turn1.start_calls(turn1.hand_over(group))
        session.commit()
        answer1 = turn1.answers.get(timeout=5)
        assert answer1.error is not None and answer1.error.maybe_sent
        assert len(transport.created) == 1  # Twilio has it

        clock.set(clock.now() + timedelta(minutes=2))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        other_session.commit()

        clock.set(old_expiry - timedelta(seconds=3))
        turn2 = DispatchPass(w2, session2, DispatchReport(), None)
        assert turn2.claim()
        session2.commit()
        group2 = list(turn2.ready)
        turn2.ready.clear()
        items = turn2.hand_over(group2)
        session2.commit()
        assert items

        turn1.answers.put(answer1)  # w1's late answer
        turn1.outcomes.record(turn1.collect())
        session.commit()
        if correct_to is not None:
            correct_end(other_session, care, procedure_id, correct_to, clock.now())

        clock.advance(timedelta(seconds=2))  # w2's worker starts a little later
        turn2.start_calls(items)
        answer2 = turn2.answers.get(timeout=5)
        assert answer2.withheld == "expired"
        turn2.answers.put(answer2)
        turn2.outcomes.record(turn2.collect())
        session2.commit()

    listed_then_settled(session, other_session, transport, care, clock)
    restart = text(session, "blood-thinner-restart")
    assert len(transport.created) == 1, ("sent to the patient a second time", restart.status)
    # The reaper found w1's copy at Twilio: the patient has it.
    assert (restart.status, restart.provider_sid) == (SENT, transport.created[0][2])


def test_a_withheld_copy_requeued_on_its_reopened_window_is_not_sent_while_an_earlier_request_may_be_at_twilio(  # noqa: E501
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The nurse moves the end two hours later: the withheld text's window is open again.
    # Requeued with its hand-over mark undone, w1's copy (at Twilio) would be forgotten and
    # the text sent a second time.
    _withheld_while_an_earlier_request_is_at_twilio(
        session=session, other_session=other_session, session_factory=session_factory,
        care=care, clock=clock, enroll=enroll, correct_to="2026-03-06T16:30",
    )  # fmt: skip


def test_a_withheld_copy_whose_window_closes_is_asked_about_while_an_earlier_request_may_be_at_twilio(  # noqa: E501
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # No correction: the window closes. Expired with its lease and hand-over mark cleared,
    # no pass would ever ask Twilio: the patient has the text, the record would say it
    # never went.
    _withheld_while_an_earlier_request_is_at_twilio(
        session=session, other_session=other_session, session_factory=session_factory,
        care=care, clock=clock, enroll=enroll, correct_to=None,
    )  # fmt: skip
