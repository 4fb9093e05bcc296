"""Review of b50d8a9..bf68e3b: defects the day's changes introduced or left."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import SendResult
from followup.messaging.turns import DispatchPass
from tests.messaging.helpers import Enroll, dispatch, requeued_mid_request, text
from tests.messaging.test_closed_copy_asked import ListsLate


class ListsLateHooked(ListsLate):
    """ListsLate, with `during_find` run (once) while the reaper asks the provider."""

    during_find: Callable[[], None] | None = None

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        hook, self.during_find = self.during_find, None
        if hook is not None:
            hook()
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def test_an_earlier_request_marked_while_the_reaper_asks_from_a_later_one_is_not_resent(
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # w1's request (15:00) reached Twilio; its answer timed out and w1 stalled; the reaper
    # (Twilio not listing it yet) requeued the text. w2 sent it again at 15:06; that request
    # timed out before reaching Twilio (outcome unknown). Once w2's lease ran out the
    # reaper took the text and asks Twilio from w2's request on; meanwhile w1's late answer
    # is recorded: take_back's new "earlier" guard marks the text to be asked from 15:00.
    # The reaper must not then requeue it on a look that started after 15:00: w1's text
    # is at Twilio (the patient has it).
    transport = ListsLateHooked()
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
        assert answer2.error is not None and answer2.error.maybe_sent
        turn2.answers.put(answer2)
        turn2.outcomes.record(turn2.collect())
        session2.commit()
        message = text(session, "no-driving")
        assert message.status == "sending" and message.lease_expires_at is not None

        def w1_answer_comes() -> None:
            turn1.answers.put(answer1)
            turn1.outcomes.record(turn1.collect())
            session.commit()

        transport.listing = True
        transport.during_find = w1_answer_comes
        clock.set(message.lease_expires_at + timedelta(seconds=1))
        reap_stale(session=other_session, transport=transport, now=clock.now())
    for minutes in (0, 1, 5):
        later = clock.now() + timedelta(minutes=minutes)
        reap_stale(session=other_session, transport=transport, now=later)
        dispatch(session, transport, care, later)
    assert len(transport.created) == 1, "sent to the patient a second time"
    assert text(session, "no-driving").status == "sent"
