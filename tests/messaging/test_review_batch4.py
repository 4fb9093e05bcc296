"""Review of the reaper's concurrent questions (80d5b82), its moving instant (eae9af0)
and withheld texts left for the reaper (4d5aea9)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import dispatch_due
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import SendResult, TransientSendError
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at


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
