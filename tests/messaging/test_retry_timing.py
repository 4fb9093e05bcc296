"""Retries and the clock (found by a review; each failed before its fix):

- a retry whose backoff would land in quiet hours that last past the text's expiry is cut
  short to a last try before they start (`last_moment`), as it is before the expiry;
- an unknown outcome (a 5xx that may have created the text) waits for the reaper under
  the reaper's name, so another dispatcher is not kept from the patient's other texts
  until the retry time (minutes, or a long Retry-After).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import QuietHours
from followup.clock import FakeClock
from followup.messaging.claims import next_wake
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import EXPIRED, PENDING, SENT, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.retries import last_moment
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, event_details, midday_zone, seed, text


class QueueFullUntil(ScriptedTransport):
    """Twilio answers 30001 (queue overflow: nothing created) to every text handed over
    before `until`, and accepts them after."""

    def __init__(self, until: object) -> None:
        super().__init__()
        self.until = until
        self.refused: list[object] = []

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.now < self.until:  # type: ignore[operator]
            self.refused.append(sms.now)
            raise TransientSendError("30001", "queue overflow")
        return super().send(sms)


def test_a_retry_is_squeezed_in_before_quiet_hours_that_outlast_the_window(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Booked for 08:00 on Thursday: the day-before text (take morning medicines with sips of
    # water, bring a driver) is due at 16:00 on Wednesday and expires at 05:00 Thursday,
    # inside quiet hours: it can go out until just before 21:00 Wednesday, not after.
    # Twilio's queue overflows from 16:00 to 20:59, then accepts again.
    enroll(completed_at="", scheduled_at="2026-03-12T08:00")
    day_before = text(session, "day-before")
    assert day_before.expires_at == at("2026-03-12T05:00")
    transport = QueueFullUntil(at("2026-03-11T20:59"))
    now = at("2026-03-11T16:00")
    for _ in range(100):  # the running loop: a pass, then sleep until the next wake-up
        dispatch_due(
            session=session,
            transport=transport,
            care=care,
            clock=FakeClock(now),
            owner="w",
            rng=random.Random(7),
        )
        wake = next_wake(session=session, now=now)
        if wake is None or wake <= now:
            break
        now = wake
    day_before = text(session, "day-before")
    # The last refusal came at 20:58; a try at 20:59:5x still fits before quiet hours
    # (before `last_moment`, the backoff of about 10 minutes put the retry at 21:08, inside
    # quiet hours that last past the expiry: expired unsent).
    assert at("2026-03-11T20:58") <= max(transport.refused) < at("2026-03-11T20:59")  # type: ignore[type-var]
    assert day_before.status == SENT, (
        day_before.status,
        event_details(session, day_before.id, "expired"),
    )
    assert len(transport.sent) == 1
    assert day_before.sent_at is not None and day_before.sent_at < at("2026-03-11T21:00")


def test_an_unknown_outcome_holds_the_patients_other_texts_no_longer_than_a_lease(
    session: so.Session, care: CareContext, clock: FakeClock
) -> None:
    # Worker A hands the restart over; Twilio answers 503 with Retry-After 600 (the request
    # may have reached Twilio: outcome unknown). A is then restarted (a deploy) and comes
    # back as worker B. The patient's warning-signs text falls due two minutes later.
    now = clock.now()
    zone = midday_zone(now)
    [restart] = seed(
        session, 1, due=now, expires=now + timedelta(hours=48), tz=zone,
        step="blood-thinner-restart", blood_thinner="Eliquis",
    )  # fmt: skip
    first = session.get(Message, restart)
    assert first is not None
    warning = Message(
        procedure_id=first.procedure_id,
        patient_id=first.patient_id,
        step="warning-signs",
        due_at=now + timedelta(minutes=2),
        expires_at=now + timedelta(hours=6),
        status=PENDING,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(warning)
    session.commit()
    warning_id = warning.id

    refused = ScriptedTransport(
        outcomes=[
            TransientSendError("503", "Twilio server error", retry_after=600, maybe_sent=True)
        ]
    )
    a = dispatch_due(
        session=session, transport=refused, care=care, clock=FakeClock(now), owner="worker-a",
        rng=random.Random(7),
    )  # fmt: skip
    assert a.unknown == 1

    # Two minutes later: the reaper's round (every 20 s), then the restarted worker's pass.
    later = now + timedelta(minutes=2)
    transport = ScriptedTransport(provider_has=[])
    reap_stale(session=session, transport=transport, now=later)
    session.commit()
    b = dispatch_due(
        session=session, transport=transport, care=care, clock=FakeClock(later),
        owner="worker-b", rng=random.Random(7),
    )  # fmt: skip
    session.expire_all()
    status = session.scalar(sa.select(Message.status).where(Message.id == warning_id))
    # Had worker A kept its own lease on the restart to the retry time (10 minutes), no
    # other dispatcher would claim any text of this patient until then: the warning signs
    # would wait 10 minutes instead of at most a lease (60 s).
    assert [sms.step for sms in transport.sent] == ["warning-signs"], (status, b)
    assert status == SENT
    assert status != EXPIRED


NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("now", "expires", "last"),
    [
        # The window closes before the evening's quiet hours: the expiry.
        ("2026-06-02T15:00", "2026-06-02T20:00", "2026-06-02T20:00"),
        # It closes inside them (at 05:00): they start at 21:00, the last moment.
        ("2026-06-02T15:00", "2026-06-03T05:00", "2026-06-02T21:00"),
        # It closes after they end (08:00): a try fits the next morning, the expiry.
        ("2026-06-02T15:00", "2026-06-03T12:00", "2026-06-03T12:00"),
        # Already inside quiet hours that outlast it: no moment left.
        ("2026-06-02T22:00", "2026-06-03T05:00", "2026-06-02T22:00"),
        # Across the spring-forward night (2026-03-08 02:00 does not exist in New York).
        ("2026-03-07T15:00", "2026-03-08T05:00", "2026-03-07T21:00"),
        # Across the fall-back night (01:00-02:00 happens twice).
        ("2026-10-31T15:00", "2026-11-01T07:30", "2026-10-31T21:00"),
        # Two nights: the first ends before the window closes, the second outlasts it.
        ("2026-06-02T15:00", "2026-06-04T01:00", "2026-06-03T21:00"),
    ],
)
def test_last_moment_is_the_expiry_or_the_start_of_quiet_hours_that_outlast_it(
    care: CareContext, now: str, expires: str, last: str
) -> None:
    def local(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=NEW_YORK)

    assert str(care.quiet_hours) == "21:00-08:00"
    moment = last_moment(expires_at=local(expires), now=local(now), tz=NEW_YORK, care=care)
    assert moment == local(last)


def test_last_moment_without_quiet_hours_is_the_expiry(care: CareContext) -> None:
    none = replace(care, quiet_hours=QuietHours(start=time(0), end=time(0)))
    now = datetime(2026, 6, 2, 19, tzinfo=UTC)
    expires = now + timedelta(hours=30)
    assert last_moment(expires_at=expires, now=now, tz=NEW_YORK, care=none) == expires
