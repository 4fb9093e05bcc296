"""`followup --now <an hour ago> worker` (a pinned clock, standing still): its dispatcher
keeps leases on this host's clock (`Dispatcher.lease_clock`, `Runtime.pinned`), and its
claim judges other dispatchers' leases on that clock too (`claim_due(lease_now=...)`).

The loop's `next_wake(owner=...)` passes over a text whose patient another dispatcher
holds a text for under a live lease, but judges that lease at the pinned instant, not on
this host's clock. A dead worker's claim that ran out (by every other process's clock,
and by the pinned worker's own claim) still looks live to it an hour earlier, for ever: the
loop never runs a pass, and the patient's next text is never sent by this worker, though
its claim would take it at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import midday_zone, seed


def test_a_pinned_worker_sends_the_text_a_dead_workers_run_out_claim_no_longer_holds(
    runtime: Runtime, session: so.Session, care: CareContext
) -> None:
    real_now = datetime.now(UTC).replace(microsecond=0)
    pinned = real_now - timedelta(hours=1)  # `followup --now <an hour ago> worker`
    [held] = seed(
        session,
        1,
        due=pinned - timedelta(minutes=30),
        expires=real_now + timedelta(days=1),
        tz=midday_zone(real_now),
    )
    first = session.get(Message, held)
    assert first is not None
    # The same patient's next text, due too.
    session.add(
        Message(
            procedure_id=first.procedure_id,
            patient_id=first.patient_id,
            step="soreness",
            due_at=first.due_at,
            expires_at=first.expires_at,
            status="pending",
            attempts=0,
            created_at=first.created_at,
            updated_at=first.updated_at,
        )
    )
    # A worker claimed the first text and died: its lease ran out two minutes ago, on the
    # clock every process keeps leases on (this host's).
    session.execute(
        sa.update(Message)
        .where(Message.id == held)
        .values(
            status="sending",
            lease_owner="dead-worker",
            lease_expires_at=real_now - timedelta(minutes=2),
            claimed_at=real_now - timedelta(minutes=3),
        )
    )
    session.commit()
    next_id = session.scalar(sa.select(Message.id).where(Message.step == "soreness"))
    transport = ScriptedTransport()
    pinned_worker = Runtime(
        settings=runtime.settings,
        clock=FakeClock(pinned),  # what `followup --now` builds; host_clock: this host's
        engine=runtime.engine,
        session_factory=runtime.session_factory,
        care=care,
        transport=transport,
        owner="pinned-worker",
        pinned=True,
    )
    loop = DispatchLoop(pinned_worker)
    try:
        for _ in range(3):  # a second and a half of the loop's looks
            loop.step()
    finally:
        loop.dispatcher.close()
    sent = [sms.message_id for sms in transport.sent]
    assert next_id in sent, (
        f"the patient's next text was not sent in {loop.passes} passes "
        f"(the dead worker's lease ran out at {real_now - timedelta(minutes=2)}, "
        f"judged at the pinned {pinned})"
    )
