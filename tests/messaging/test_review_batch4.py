"""Review of the reaper's concurrent questions (80d5b82), its moving instant (eae9af0)
and withheld texts left for the reaper (4d5aea9)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import Dispatcher, dispatch_due
from followup.messaging.models import SENT
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, dispatch, restart_due_now, text
from tests.messaging.test_withheld_with_an_earlier_request import TakenButTimedOut


class PassNeverEnds(BaseException):
    """Raised by the fake to stop a reaper pass that keeps asking about the same texts."""


def test_a_reaper_pass_with_a_moving_clock_ends_while_the_provider_cannot_be_asked(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A dispatcher died with two texts handed over. Twilio's list API is down: each
    # question times out after a long wait (the reaper's clock moves on meanwhile), and
    # each text is asked again later (`_ask_again_later`: the lease is pushed one lease
    # on). A pass takes its batches at the clock's instant now (eae9af0): by the time it
    # has asked about the second batch, the first batch's "ask again later" has already
    # come, so the same pass takes it again, and again: the pass never ends (the
    # closed-copies pass and the held delivery reports after it never run): the back-off
    # grows with the text's age but stops at 15 minutes, and a pass that takes longer than
    # that to go round its texts takes each one again forever. Production shape: 1,500
    # stale texts (a Twilio outage), 500 a batch, 16 questions at once timing out at 10 s:
    # 320 s a batch, 960 s a round. Here: 16 texts, batches of one, 61 s a question.
    texts = 16
    clock.set(at("2026-03-06T15:00"))
    for i in range(texts):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-01{40 + i}")
    now = clock.now()
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")] * texts)
    assert dispatch_due(
        session=session, transport=crashing, care=care, clock=FakeClock(now), owner="dead"
    ).unknown == texts  # fmt: skip
    running = FakeClock(now + LEASE)
    asked: list[str] = []

    class TimingOut(ScriptedTransport):
        def find_sent(
            self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
        ) -> SendResult | None:
            asked.append(to)
            if len(asked) > 3 * texts:
                raise PassNeverEnds(f"asked {len(asked)} times in one pass")
            running.advance(LEASE + timedelta(seconds=1))  # the request's wait
            raise TransientSendError("timeout", "no answer from the list API")

    try:
        report = reap_stale(
            session=session,
            transport=TimingOut(provider_has=[]),
            now=now + LEASE,
            batch=1,
            clock=running,
        )
    except PassNeverEnds as exc:
        raise AssertionError(f"the reaper's pass does not end: {exc}") from None
    assert (report.stale, report.errors) == (texts, texts)  # each asked once this pass


def test_a_withheld_copy_whose_window_closes_is_asked_about_while_an_earlier_request_may_be_at_twilio(  # noqa: E501
    session: so.Session,
    other_session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Not introduced by the three commits: 4d5aea9 leaves a withheld text for the reaper
    # when an earlier request may be at Twilio if it was to be requeued (re-opened window,
    # quiet hours, late start), not if it was to be expired. w1's request reaches Twilio,
    # its answer times out late; the reaper (Twilio not listing it yet) requeues it; w2
    # claims and guards it 3 s before its window closes; w1's late answer marks it to be
    # asked from w1's request on; w2's worker withholds it (window closing). Expired with
    # its lease and hand-over mark cleared, no pass ever asks Twilio: the patient has the
    # text, the record says it never went (record_refused asks in the same case).
    transport = TakenButTimedOut()
    restart_due_now(session, transport, care, clock, enroll)
    transport.created.clear()
    expiry = text(session, "blood-thinner-restart").expires_at
    transport.time_out = True
    clock.set(expiry - timedelta(minutes=5))
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

        clock.set(expiry - timedelta(seconds=3))
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

        clock.advance(timedelta(seconds=2))
        turn2.start_calls(items)
        answer2 = turn2.answers.get(timeout=5)
        assert answer2.withheld == "expired"
        turn2.answers.put(answer2)
        turn2.outcomes.record(turn2.collect())
        session2.commit()

    transport.listing = True
    for minutes in (1, 5, 20):
        later = clock.now() + timedelta(minutes=minutes)
        reap_stale(session=other_session, transport=transport, now=later)
        other_session.commit()
        dispatch(session, transport, care, later)
    restart = text(session, "blood-thinner-restart")
    assert len(transport.created) == 1
    assert (restart.status, restart.provider_sid) == (SENT, transport.created[0][2])
