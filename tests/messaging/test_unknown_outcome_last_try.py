"""A retry after an answer that leaves the outcome unknown (a Twilio 5xx on the create, a
timeout) is woken for at its retry time, like any other retry.

The dispatcher writes such a text `sending` under the reaper's name until its retry time
(outcomes.py), and nothing wakes anyone at that time: the running worker's dispatcher
loop (`next_wake`) looks only at pending texts, so the text is taken up at the reaper's
next round, up to REAP_EVERY (20 s) later. Where the retry is the last try squeezed in
before quiet hours that outlast the window (README, "Retries until the window closes":
"a last try is squeezed in just before ... quiet hours that last past it begin"), that
round usually comes after 21:00 and the text expires unsent: only a reaper round that
happens to fall in the 2 s between the retry time (20:59:56) and the hand-over margin
before 21:00 sends it (2 of every 20 s; the phases tried here all miss it).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.claims import next_wake
from followup.messaging.models import SENT
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.runtime import Runtime
from jobs import tasks
from jobs.dispatcher import DispatchLoop
from jobs.scheduler import REAP_EVERY
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, event_details, text


class ServerErrorUntil(ScriptedTransport):
    """Twilio answers 500 to every create handed over before `until` (the request may have
    created the text: outcome unknown; it had not), and accepts them after."""

    def __init__(self, until: datetime) -> None:
        super().__init__(provider_has=[])
        self.until = until
        self.refused: list[datetime] = []

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.now < self.until:
            self.refused.append(sms.now)
            raise TransientSendError("500", "Twilio server error", maybe_sent=True)
        return super().send(sms)


def run_worker(runtime: Runtime, clock: FakeClock, *, until: datetime, reap_at: datetime) -> None:
    """A `followup worker` on the fake clock: its dispatcher loop stepping whenever it asks
    to look again (jumping over idle looks to the next wake-up), and its reap job every
    REAP_EVERY from `reap_at`, which wakes the loop when it requeues (as the loop's prompt
    reaper does)."""
    loop = DispatchLoop(runtime)
    loop.dispatcher.rng = random.Random(7)
    try:
        while clock.now() < until:
            wait = loop.step()
            # The prompt reaper's thread (a parked text's retry time came): let it finish;
            # if it requeued the text, it woke the loop, which looks again at once.
            assert loop.wait_for_reaps()
            if loop._wake.is_set():
                loop._wake.clear()
                continue
            with runtime.session_factory() as session:
                wake = next_wake(session=session, now=clock.now())
            step_at = clock.now() + timedelta(seconds=wait)
            if wake is not None and wake > step_at:
                step_at = wake  # the idle looks between find nothing new
            if wake is None:
                step_at = until
            if reap_at <= step_at:
                clock.set(max(reap_at, clock.now()))
                tasks.reap(runtime)
                reap_at += REAP_EVERY
            else:
                clock.set(step_at)
    finally:
        loop.dispatcher.close()


@pytest.mark.parametrize("reap_second", [0, 5, 10, 15])
def test_a_last_try_after_a_server_error_is_made_before_quiet_hours(
    runtime: Runtime, session: so.Session, clock: FakeClock, enroll: Enroll, reap_second: int
) -> None:
    # Booked for 08:00 on Thursday: the day-before text is due at 16:00 on Wednesday and
    # expires at 05:00 Thursday, inside quiet hours: it can go until just before 21:00.
    # Twilio answers 500 to every create from 16:00 to 20:58, then accepts again.
    enroll(completed_at="", scheduled_at="2026-03-12T08:00")
    day_before = text(session, "day-before")
    assert day_before.expires_at == at("2026-03-12T05:00")
    transport = ServerErrorUntil(at("2026-03-11T20:58"))
    worker = replace(runtime, transport=transport)
    clock.set(at("2026-03-11T16:00"))
    run_worker(
        worker,
        clock,
        until=at("2026-03-11T21:05"),
        reap_at=at("2026-03-11T16:00") + timedelta(seconds=reap_second),
    )
    day_before = text(session, "day-before")
    # The last refusal came before 20:58, and its retry was put just before 21:00 (the
    # last moment before quiet hours that outlast the window) ...
    retries = event_details(session, day_before.id, "outcome-unknown")
    assert max(transport.refused) < at("2026-03-11T20:58")
    assert retries[-1].endswith(at("2026-03-11T20:59:56").isoformat()), retries[-1]
    # ... but nobody woke for it: the reaper's round after it came inside quiet hours.
    assert day_before.status == SENT, (
        f"{day_before.status}: last try due {retries[-1]!r}; "
        f"expired: {event_details(session, day_before.id, 'expired')}"
    )
