"""Two reapers (two processes, different lease owners) and one text whose outcome is
unknown: a pass that outlives its lease (a slow Twilio) meets a second reaper. Every write
is guarded on the status and the lease owner it read, so the text is settled once: never
one requeue and one `sent`, never two requeues. Interleaved deterministically: the second
reaper runs its whole pass while the first is asking Twilio."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import ReapReport
from followup.messaging.transports.base import SendResult
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at
from tests.messaging.test_dispatch import tick
from tests.messaging.test_reaper import dead_dispatcher_left


class Asked(ScriptedTransport):
    """Counts the questions about each number; `during` runs (once per entry) while the
    provider is asked about the nth question, before it answers."""

    def __init__(self, provider_has: list[tuple[str, str, str]]) -> None:
        super().__init__(provider_has=provider_has)
        self.asked: Counter[str] = Counter()
        self.during: dict[int, Callable[[], None]] = {}
        self.questions = 0

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        self.questions += 1
        self.asked[to] += 1
        hook = self.during.pop(self.questions, None)
        if hook is not None:
            hook()
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def settling_events(session: so.Session) -> list[str]:
    session.expire_all()
    return list(
        session.scalars(
            sa.select(MessageEvent.kind)
            .join(Message)
            .where(
                Message.step == "no-driving",
                MessageEvent.kind.in_(("requeued", "reconciled", "expired")),
            )
        )
    )


@pytest.mark.parametrize("at_twilio", [False, True])
def test_a_second_reaper_taking_a_text_whose_reaper_outlived_its_lease_settles_it_alone(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    at_twilio: bool,
) -> None:
    # Reaper A takes the text and asks Twilio; Twilio is slow, A's lease runs out, and
    # reaper B (another process) takes the text and settles it. Then A's answer comes: it
    # writes nothing, whatever it says.
    now, _ = dead_dispatcher_left(session, care, clock, enroll, 1)
    [text] = session.scalars(sa.select(Message).where(Message.step == "no-driving")).all()
    has = [(text.to_phone or "", text.body or "", "SM-at-twilio")] if at_twilio else []
    transport = Asked(provider_has=has)
    b_report = ReapReport()

    def reaper_b_runs() -> None:
        clock.set(now + 2 * LEASE + timedelta(seconds=1))  # past A's lease
        with session_factory() as other:
            b_report.add(reap_stale(session=other, transport=transport, now=clock.now(), owner="B"))

    transport.during[1] = reaper_b_runs
    a_report = reap_stale(session=session, transport=transport, now=now + LEASE, owner="A")
    assert b_report.stale == 1  # B took it: A's lease had run out
    assert transport.asked[text.to_phone or ""] == 2
    assert (a_report.requeued, a_report.reconciled) == (0, 0)  # A's answer wrote nothing
    if at_twilio:
        assert b_report.reconciled == 1
        assert settling_events(session) == ["reconciled"]
    else:
        assert b_report.requeued == 1
        assert settling_events(session) == ["requeued"]
        tick(session, transport, care, clock.now())
        assert [sms.to for sms in transport.sent] == [text.to_phone]  # sent again once
    session.refresh(text)
    assert (text.status, text.lease_owner) == ("sent", None)


def test_a_late_not_found_does_not_requeue_a_text_handed_over_again_meanwhile(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # As above, and after B requeued the text a dispatcher (w1) handed it over again; its
    # request is under way (`sending`, handed over, w1's lease) when A's "not found" comes.
    # A must not requeue it: that would send it a third time.
    now, _ = dead_dispatcher_left(session, care, clock, enroll, 1)
    [text] = session.scalars(sa.select(Message).where(Message.step == "no-driving")).all()
    transport = Asked(provider_has=[])

    def reaper_b_then_a_dispatcher() -> None:
        clock.set(now + 2 * LEASE + timedelta(seconds=1))
        with session_factory() as other:
            assert reap_stale(
                session=other, transport=transport, now=clock.now(), owner="B"
            ).requeued
            transport.outcomes = [RuntimeError("stalled mid-request")]
            tick(other, transport, care, clock.now())

    transport.during[1] = reaper_b_then_a_dispatcher
    a_report = reap_stale(session=session, transport=transport, now=now + LEASE, owner="A")
    assert (a_report.requeued, a_report.expired, a_report.reconciled) == (0, 0, 0)
    session.refresh(text)
    assert (text.status, text.lease_owner) == ("sending", "w1")
    assert settling_events(session) == ["requeued"]


def test_a_reaper_pass_longer_than_its_lease_takes_each_batch_under_a_lease_from_then(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Reaper A's pass takes a dead dispatcher's two texts one batch at a time; Twilio takes
    # longer than a lease to answer about the first. The second batch is taken then, under
    # a whole lease from that instant: reaper B, running while A asks about it, takes
    # nothing (taken under a lease counted from the pass's start, it would already have
    # run out, and both reapers would ask about it and race to settle it).
    now, _ = dead_dispatcher_left(session, care, clock, enroll, 2)
    transport = Asked(provider_has=[])
    start = now + LEASE
    clock.set(start)
    b_report = ReapReport()

    def twilio_is_slow() -> None:
        clock.advance(LEASE + timedelta(seconds=10))

    def reaper_b_runs() -> None:
        with session_factory() as other:
            b_report.add(reap_stale(session=other, transport=transport, now=clock.now(), owner="B"))

    transport.during[1] = twilio_is_slow
    transport.during[2] = reaper_b_runs
    a_report = reap_stale(
        session=session, transport=transport, now=start, owner="A", batch=1, clock=clock
    )
    assert b_report.stale == 0
    assert (a_report.stale, a_report.requeued) == (2, 2)
    assert transport.questions == 2  # each text asked about once
    assert sorted(settling_events(session)) == ["requeued", "requeued"]


def test_a_reaper_asking_about_a_big_batch_keeps_the_rest_of_it_its_own(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # A dead dispatcher left 150 texts handed over, none at Twilio. Reaper A takes them in
    # one batch and asks about them at 0.5 s each (75 s in all, past its 60 s lease).
    # Reaper B's pass, late in A's, finds none of them stale: A renews its lease on the
    # batch's rest as it goes. Each text is asked about once and requeued once.
    count = 150
    clock.set(at("2026-03-06T15:00"))
    for i in range(count):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{2000 + i:04d}")
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")] * count)
    report = dispatch_due(
        session=session, transport=crashing, care=care, clock=FakeClock(clock.now()), owner="dead"
    )
    assert report.unknown == count
    clock.advance(LEASE * 2)
    lock = threading.Lock()

    class Slow(Asked):
        def find_sent(
            self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
        ) -> SendResult | None:
            with lock:
                clock.advance(timedelta(seconds=0.5))
                return super().find_sent(to=to, body=body, since=since, exclude=exclude)

    transport = Slow(provider_has=[])
    second: list[ReapReport] = []

    def reaper_b() -> None:
        with session_factory() as other:
            b = Asked(provider_has=[])
            second.append(reap_stale(session=other, transport=b, now=clock.now(), owner="B/reap"))

    transport.during[140] = reaper_b
    first = reap_stale(
        session=session, transport=transport, now=clock.now(), owner="A/reap", clock=clock
    )
    assert second and second[0].stale == 0, "reaper B took texts reaper A was about to ask about"
    assert (first.stale, first.requeued) == (count, count)
    assert set(transport.asked.values()) == {1} and len(transport.asked) == count
