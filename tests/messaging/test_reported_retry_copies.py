"""A text a 30001 report put back in the queue carries a second copy (another SID) once it
is sent again: reports about the first copy (a poll's) no longer touch it; and its retry is
timed as a create's would be, before quiet hours that outlast its window (found by a
review; each failed before its fix)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import next_wake
from followup.messaging.models import PENDING, SENT, Message
from followup.messaging.status import (
    ProviderStatus,
    poll_stale_statuses,
    record_status_callback,
)
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import dispatch, messages


def test_a_poll_of_the_failed_first_copy_leaves_the_retried_copy_alone(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
) -> None:
    # Two texts sent, both without a delivery report for half an hour: the status poller
    # reads its batch (SIDs included) first, then asks Twilio about each in turn.
    transport = ScriptedTransport(provider_has=[])
    enroll()
    enroll(first_name="Bea", last_name="Ortiz", phone="(202) 555-0144")
    dispatch(session, transport, care, clock.now())
    sent = sorted(
        session.scalars(sa.select(Message).where(Message.status == SENT)).all(),
        key=lambda m: (m.updated_at, m.id),
    )
    assert len(sent) == 2
    first, second = sent[0], sent[1]
    first_sid, old_sid = first.provider_sid, second.provider_sid
    assert first_sid and old_sid
    clock.advance(timedelta(minutes=30))
    poll_now = clock.now()
    new_sids: list[str] = []

    class SlowLookup:
        """While Twilio answers about the first text (a slow provider: a batch of 100
        takes a minute or more), the second's copy fails with 30001, its callback comes,
        and the dispatcher sends it again (backoff 15-30 s; 2 minutes later)."""

        def fetch_status(self, provider_sid: str) -> ProviderStatus:
            if provider_sid == first_sid:
                with session_factory() as other:
                    record_status_callback(
                        session=other, provider_sid=old_sid, status="failed",
                        error_code=30001, now=clock.now(),
                    )  # fmt: skip
                    other.commit()
                    clock.advance(timedelta(minutes=2))
                    dispatch(other, transport, care, clock.now())
                    retried = other.get(Message, second.id)
                    assert retried is not None
                    assert retried.status == SENT and retried.provider_sid != old_sid
                    new_sids.append(retried.provider_sid or "")
                return ProviderStatus("delivered")
            if provider_sid == old_sid:
                return ProviderStatus("failed", 30001)  # the first copy: failed, for good
            return ProviderStatus("sent")

    poll_stale_statuses(
        session=session, lookup=SlowLookup(), now=poll_now, older_than=timedelta(minutes=10)
    )

    session.expire_all()
    again = session.get(Message, second.id)
    assert again is not None
    to = again.to_phone
    assert [sms.to for sms in transport.sent].count(to) == 2
    # The poll's answer was about the first copy (old_sid): the second copy, which the
    # patient may be reading now, is neither requeued nor failed by it.
    assert (again.status, again.provider_sid) == (SENT, new_sids[0]), (
        f"the retried copy was settled by the old copy's poll: {again.status}, "
        f"sid {again.provider_sid}, error {again.error_code}"
    )
    clock.advance(timedelta(minutes=20))
    dispatch(session, transport, care, clock.now())
    assert [sms.to for sms in transport.sent].count(to) == 2, "sent a third time"


def test_a_30001_report_before_quiet_hours_retries_before_them_when_they_outlast_the_window(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # As 56e5495 does for a refused create (last_moment): a text whose window closes at
    # 05:00 (New York), reported failed with 30001 at 20:57, still has a try before quiet
    # hours (21:00-08:00); a backoff that ends inside them only expires it.
    transport = ScriptedTransport(provider_has=[])
    enroll()
    dispatch(session, transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == SENT and text.provider_sid
    night_expiry = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)  # 05:00 EST on Saturday
    # Its fifth attempt went out (four refusals before it): the next backoff is 4-8 min.
    session.execute(
        sa.update(Message).where(Message.id == text.id).values(expires_at=night_expiry, attempts=5)
    )
    session.commit()
    clock.set(datetime(2026, 3, 7, 1, 57, tzinfo=UTC))  # 20:57 EST on Friday
    record_status_callback(
        session=session, provider_sid=text.provider_sid, status="failed", error_code=30001,
        now=clock.now(), care=care,  # as the webhook passes its runtime's
    )  # fmt: skip
    session.commit()
    text = messages(session)["no-driving"]
    assert text.status == PENDING
    quiet_start = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)  # 21:00 EST
    assert text.not_before is not None
    assert text.not_before < quiet_start, (
        f"retry put at {text.not_before:%H:%M:%S} UTC, inside quiet hours that last past "
        "its 05:00 expiry: it can only expire unsent"
    )


def test_a_30001_report_before_quiet_hours_text_reaches_the_patient(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # The same scene, end to end: the dispatcher loop, waking when the next text is due.
    transport = ScriptedTransport(provider_has=[])
    enroll()
    dispatch(session, transport, care, clock.now())
    text = messages(session)["no-driving"]
    session.execute(
        sa.update(Message)
        .where(Message.id == text.id)
        .values(expires_at=datetime(2026, 3, 7, 10, 0, tzinfo=UTC), attempts=5)
    )
    session.commit()
    clock.set(datetime(2026, 3, 7, 1, 57, tzinfo=UTC))
    record_status_callback(
        session=session, provider_sid=text.provider_sid or "", status="failed",
        error_code=30001, now=clock.now(), care=care,
    )  # fmt: skip
    session.commit()
    end = datetime(2026, 3, 7, 10, 30, tzinfo=UTC)
    now = clock.now()
    for _ in range(200):  # the running loop: a pass, then asleep until the next wake-up
        dispatch(session, transport, care, now)
        wake = next_wake(session=session, now=now)
        if wake is None or wake <= now or wake > end:
            break
        now = wake
    text = messages(session)["no-driving"]
    assert transport.steps_sent().count("no-driving") == 2, (
        f"never sent again: {text.status} ({text.error_code})"
    )
