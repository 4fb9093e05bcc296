"""The reaper: a dead or stalled dispatcher's texts, requeued when they never left, asked
about at Twilio (side by side) when they may have, recorded with what Twilio says."""

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import is_postgresql
from followup.messaging import reconcile
from followup.messaging.claims import LEASE, claim_due
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import SendResult, TransientSendError
from jobs.scheduler import REAP_EVERY
from tests.fakes.transport import ScriptedTransport, TooManyRequests
from tests.messaging.helpers import no_driving_claimed
from tests.messaging.test_dispatch import Enroll, at, events, statuses, tick


def test_a_claimed_text_never_handed_over_is_requeued_without_asking_and_sent_once(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    now = clock.now()
    # A dispatcher claimed it and died before handing it to the transport.
    claim_due(session=session, now=now, owner="dead-worker", limit=10)
    session.commit()
    assert (
        reap_stale(
            session=session, transport=transport, now=now + LEASE - timedelta(seconds=1)
        ).stale
        == 0
    )
    # The console-like transport cannot be asked, and need not be: it never had the text.
    report = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert (report.stale, report.requeued, report.held) == (1, 1, 0)
    tick(session, transport, care, now + LEASE)
    assert transport.steps_sent() == ["no-driving"]
    assert events(session, "no-driving") == ["planned", "claimed", "requeued", "claimed", "sent"]


def test_a_text_handed_over_with_no_answer_is_held_when_the_transport_cannot_be_asked(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    now = clock.now()
    transport.outcomes = [RuntimeError("the socket died mid-answer")]
    report = dispatch_due(session=session, transport=transport, care=care, clock=clock, owner="w1")
    assert report.unknown == 1
    assert statuses(session)["no-driving"] == "sending"
    reap = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert reap.held == 1
    tick(session, transport, care, now + timedelta(hours=1))
    assert transport.sent == []  # not resent on a guess
    assert statuses(session)["no-driving"] == "sending"
    assert events(session, "no-driving") == ["planned", "claimed", "outcome-unknown", "held"]
    # Held once: later passes do not report it again.
    assert reap_stale(session=session, transport=transport, now=now + timedelta(hours=2)).stale == 0


def test_reaper_records_a_text_the_provider_has_and_requeues_one_it_has_not(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    enroll(completed_at="2026-03-06T14:31", phone="(202) 555-0177")
    transport = ScriptedTransport(provider_has=[])

    class CrashAfterSend(Exception):
        pass

    # The first text reaches the provider, then the process "dies" before the commit.
    original_send = transport.send
    calls = {"n": 0}

    def send_then_crash(sms):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            original_send(sms)
            raise CrashAfterSend
        raise CrashAfterSend  # the second never reaches the provider

    transport.send = send_then_crash  # type: ignore[method-assign]
    now = clock.now()
    report = dispatch_due(
        session=session, transport=transport, care=care, clock=FakeClock(now), owner="w1"
    )
    assert report.unknown == 2
    transport.send = original_send  # type: ignore[method-assign]
    reap = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert (reap.reconciled, reap.requeued) == (1, 1)
    tick(session, transport, care, now + LEASE)
    assert len(transport.sent) == 2  # one from before the crash, one resend of the lost one
    assert sorted(s.to for s in transport.sent) == ["+12025550143", "+12025550177"]
    assert set(statuses(session).values()) >= {"sent"}
    session.expire_all()
    sent = session.scalars(sa.select(Message).where(Message.step == "no-driving")).all()
    assert all(m.status == "sent" and m.provider_sid for m in sent)


@pytest.mark.parametrize(("at_twilio", "recorded"), [("undelivered", "undelivered"), ("failed", "failed"), ("delivered", "delivered"), ("queued", "sent")])  # fmt: skip
def test_reaper_records_what_twilio_says_became_of_a_text_it_finds(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    at_twilio: str,
    recorded: str,
) -> None:
    # The dispatcher died after Twilio took the text; by the time the reaper asks, Twilio
    # lists it as already undelivered (or failed): the send log and the nurses' queue say
    # so now, not sent until the next status poll.
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    transport = ScriptedTransport(provider_has=[])
    transport.outcomes = [RuntimeError("the socket died mid-answer")]
    dispatch_due(session=session, transport=transport, care=care, clock=clock, owner="w1")
    message = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    session.refresh(message)

    class ListsIt(ScriptedTransport):
        def find_sent(self, **_: object) -> SendResult | None:
            return SendResult(provider_sid="SM-found", provider_status=at_twilio)

    reap = reap_stale(session=session, transport=ListsIt(), now=clock.now() + LEASE)
    assert reap.reconciled == 1
    session.refresh(message)
    assert (message.status, message.provider_sid) == (recorded, "SM-found")


def dead_dispatcher_left(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, count: int
) -> tuple[datetime, ScriptedTransport]:
    """`count` patients' no-driving texts handed over by a dispatcher that died before any
    answer was recorded (outcome unknown); returns the instant and its transport."""
    clock.set(at("2026-03-06T15:00"))
    for i in range(count):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-01{40 + i}")
    now = clock.now()
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")] * count)
    assert dispatch_due(
        session=session, transport=crashing, care=care, clock=FakeClock(now), owner="dead"
    ).unknown == count  # fmt: skip
    return now, crashing


def test_the_reaper_asks_the_provider_about_a_dead_dispatchers_texts_side_by_side(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A dispatcher died with four texts handed over, their answers never recorded. The
    # reaper's questions go to the provider together, not one after another (at list
    # latency, a hundred in a row would outlast the 2 minutes the texts are to be settled
    # in): each question here waits until all four are being asked.
    now, crashing = dead_dispatcher_left(session, care, clock, enroll, 4)
    all_asked = threading.Barrier(4, timeout=10)

    class Together(ScriptedTransport):
        def find_sent(self, **kwargs: Any) -> SendResult | None:
            all_asked.wait()  # raises BrokenBarrierError if the questions come one by one
            return super().find_sent(**kwargs)

    report = reap_stale(session=session, transport=Together(provider_has=[]), now=now + LEASE)
    assert (report.stale, report.requeued, report.errors) == (4, 4, 0)
    tick(session, crashing, care, now + LEASE)
    assert sorted(crashing.steps_sent()) == ["no-driving"] * 4


def test_each_text_the_reaper_settles_is_stamped_when_it_is_settled_not_when_the_pass_began(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Asking the provider takes time: a pass over a dead dispatcher's texts settles the
    # last one later than the first, and the send log says when each was settled.
    now, _ = dead_dispatcher_left(session, care, clock, enroll, 3)
    start = now + LEASE
    running = FakeClock(start)

    class Ticking:
        """The reaper's clock: each reading is two seconds after the last."""

        def now(self) -> datetime:
            return running.advance(timedelta(seconds=2))

    report = reap_stale(
        session=session, transport=ScriptedTransport(provider_has=[]), now=start, clock=Ticking()
    )
    assert report.requeued == 3
    times = sorted(
        session.scalars(sa.select(MessageEvent.at).where(MessageEvent.kind == "requeued"))
    )
    assert len(set(times)) == 3 and times[0] > start


def test_a_claim_whose_dispatcher_renews_and_hands_it_over_while_the_reaper_decides_is_not_requeued(
    session: so.Session,
    other_session: so.Session,
    engine: sa.Engine,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    if is_postgresql(session):
        pytest.skip("on PostgreSQL the reaper's read locks the rows it returns (SKIP LOCKED)")
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        clock.set(clock.now() + LEASE + timedelta(seconds=30))  # w1 slow past its lease
        handed: list[bool] = []

        def w1_wakes_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # SQLite's read held no lock: the reaper read the claim stale and never handed
            # over; just before its UPDATE, w1 renews its lease and hands the text over.
            requeue = statement.startswith("UPDATE messages SET status") and "not_before" in (
                statement
            )
            if requeue and not handed:
                handed.append(True)
                turn.last_beat = float("-inf")
                turn.beat_if_due()
                group = list(turn.ready)
                turn.ready.clear()
                turn.start_calls(turn.hand_over(group))
                session.commit()

        sa.event.listen(engine, "before_cursor_execute", w1_wakes_first)
        try:
            reaped = reap_stale(session=other_session, transport=transport, now=clock.now())
        finally:
            sa.event.remove(engine, "before_cursor_execute", w1_wakes_first)
        assert handed and reaped.requeued == 0
        answer = turn.answers.get(timeout=5)  # w1's request is under way: Twilio takes it
        # Another dispatcher looks for due texts before w1's answer is recorded.
        dispatch_due(session=other_session, transport=transport, care=care, clock=clock, owner="w2")
        turn.outcomes.record([answer])
        session.commit()
    assert [sms.step for sms in transport.sent] == ["no-driving"]


def test_a_text_whose_first_question_failed_is_asked_again_at_the_reapers_next_round(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A worker was killed with a text handed over; when the reaper first asks Twilio about
    # it, the list request hits a 500. It is asked again at the reaper's next round (every
    # 20 s), not a whole lease later, so the text is still settled within 2 minutes of the
    # dead worker's last heartbeat (a soak saw 208 s: each failed question put it off 60 s).
    handed, _ = dead_dispatcher_left(session, care, clock, enroll, 1)
    answers: list[Exception | None] = [TransientSendError("http-500", "list failed"), None]

    class FailsOnce(ScriptedTransport):
        def find_sent(self, **kwargs: Any) -> SendResult | None:
            answer = answers.pop(0)
            if answer is not None:
                raise answer
            return None

    transport = FailsOnce()
    rounds = [handed + LEASE + timedelta(seconds=19)]  # the reaper's first round past it
    while rounds[-1] < handed + timedelta(minutes=2):
        rounds.append(rounds[-1] + REAP_EVERY)
    settled_at = None
    for instant in rounds:
        clock.set(instant)
        report = reap_stale(session=session, transport=transport, now=instant, care=care)
        if report.requeued:
            settled_at = instant
            break
    assert settled_at is not None and settled_at - handed <= timedelta(minutes=2), rounds
    assert answers == []  # asked twice in all


def test_a_429_to_the_reapers_questions_puts_the_rest_off_until_its_retry_after(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Five texts of a dead dispatcher, asked about two at a time. Twilio answers the first
    # two questions with 429: the pass asks nothing more (not three more 429s, nor the
    # closed copies' questions); all five stay held until the Retry-After, the two refused
    # ones too. Then each is asked and settled once, and every patient gets the text once.
    monkeypatch.setattr(reconcile, "REAP_PART", 2)
    now, crashing = dead_dispatcher_left(session, care, clock, enroll, 5)
    busy = TooManyRequests()
    stale_at = now + LEASE
    report = reap_stale(session=session, transport=busy, now=stale_at)
    assert len(busy.questions) == 2
    assert (report.stale, report.errors, report.put_off, report.requeued) == (5, 2, 3, 0)
    session.expire_all()
    held = session.execute(
        sa.select(Message.status, Message.lease_expires_at).where(Message.step == "no-driving")
    ).all()
    # All five wait for the Retry-After: the two refused and the three not asked.
    assert held == [("sending", stale_at + timedelta(seconds=45))] * 5
    # Before the Retry-After nothing is asked; after it, all five are.
    calm = TooManyRequests()
    assert (
        reap_stale(session=session, transport=calm, now=stale_at + timedelta(seconds=44)).stale == 0
    )
    assert calm.questions == []
    answering = ScriptedTransport(provider_has=[])
    later = reap_stale(session=session, transport=answering, now=stale_at + timedelta(hours=1))
    assert (later.stale, later.requeued, later.put_off) == (5, 5, 0)
    tick(session, crashing, care, stale_at + timedelta(hours=1))
    no_driving = [sms.to for sms in crashing.sent if sms.step == "no-driving"]
    assert len(no_driving) == len(set(no_driving)) == 5  # each patient once
