"""The running dispatcher wakes for the next due text even while another text is ready but
held by another dispatcher.

`next_wake` answers "now" as soon as any pending text is ready, held elsewhere or not, so
the loop never learns when the next claimable text falls due; after a pass that claimed
nothing it sleeps a whole poll (0.5 s, jobs/dispatcher.py) whatever falls due meanwhile.
For as long as another dispatcher holds one of a patient's texts (its call under way, or a
dead worker's live lease: up to 60 s), every other patient's text goes out up to half a
second late, half the one-second budget, instead of when it falls due. The same floor
follows a pass that only expired a text (its expiry was the wake-up): `step` floors the
wait to POLL_EVERY after any pass that claimed nothing, even when the next due text is
sooner.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.claims import claim_due
from followup.messaging.models import Message
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import seed


def test_a_text_due_in_100_ms_is_not_slept_past_while_another_patients_text_is_held(
    runtime: Runtime, session: so.Session, clock: FakeClock, enroll: Callable[..., Any]
) -> None:
    # Patient A has two texts due; a dead worker ("other") claimed one of them a moment ago
    # (its lease is live for a minute): A's other text is ready but not ours to send.
    enroll()
    now = clock.now()
    later = session.scalar(
        sa.select(sa.func.min(Message.id)).where(Message.due_at > now, Message.status == "pending")
    )
    session.execute(sa.update(Message).where(Message.id == later).values(due_at=now))
    session.commit()
    assert len(claim_due(session=session, now=now, owner="other", limit=1)) == 1
    session.commit()
    # Patient B's text falls due 100 ms from now.
    [b_text] = seed(
        session,
        1,
        due=now + timedelta(seconds=0.1),
        expires=now + timedelta(hours=6),
        tz="America/New_York",  # 15:00 there: no quiet hours near
        first_phone=77,
    )
    loop = DispatchLoop(runtime)
    try:
        wait = loop.step()  # a pass: A's ready text is held elsewhere, nothing claimed
        assert loop.total.claimed == 0
        clock.advance(timedelta(seconds=wait))
        loop.step()
    finally:
        loop.dispatcher.close()
    assert isinstance(runtime.transport, ScriptedTransport)
    sent = [sms for sms in runtime.transport.sent if sms.message_id == b_text]
    assert sent, "B's text was not sent at the loop's next look"
    late = (sent[0].now - sent[0].due_at).total_seconds()
    assert wait <= 0.1 + 1e-6, (
        f"the loop slept {wait} s with B's text due in 0.1 s: handed to Twilio {late:.2f} s late"
    )


def test_a_text_due_in_100_ms_is_not_slept_past_after_a_pass_that_only_expired_one(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    # No other dispatcher at all. Patient A's text, put off to a retry after its window,
    # expires now: the loop runs a pass for it (next_wake answers its expiry), which
    # expires it and claims nothing. Patient B's text falls due 100 ms from now.
    now = clock.now()
    [a_text] = seed(session, 1, due=now - timedelta(hours=1), expires=now, tz="America/New_York")
    session.execute(
        sa.update(Message).where(Message.id == a_text).values(not_before=now + timedelta(minutes=5))
    )
    session.commit()
    [b_text] = seed(
        session,
        1,
        due=now + timedelta(seconds=0.1),
        expires=now + timedelta(hours=6),
        tz="America/New_York",
        first_phone=77,
    )
    loop = DispatchLoop(runtime)
    try:
        wait = loop.step()
        assert (loop.passes, loop.total.expired, loop.total.claimed) == (1, 1, 0)
        clock.advance(timedelta(seconds=wait))
        loop.step()
    finally:
        loop.dispatcher.close()
    assert isinstance(runtime.transport, ScriptedTransport)
    sent = [sms for sms in runtime.transport.sent if sms.message_id == b_text]
    assert sent, "B's text was not sent at the loop's next look"
    late = (sent[0].now - sent[0].due_at).total_seconds()
    assert wait <= 0.1 + 1e-6, (
        f"the loop slept {wait} s with B's text due in 0.1 s: handed to Twilio {late:.2f} s late"
    )
