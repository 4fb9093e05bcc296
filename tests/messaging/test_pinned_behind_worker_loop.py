"""`followup --now <an hour ago> worker` (or `serve`) beside a live worker: its dispatcher
loop's passes must keep their leases on this host's clock, as a pinned `tick` does.

README ("A pass pinned with `--now` keeps its leases on this host's clock
(`Dispatcher.lease_clock`)"). `jobs.tasks.tick` passes `lease_clock=runtime.host_clock`
for a pinned clock, but `jobs.dispatcher.DispatchLoop._new_dispatcher` builds the loop's
Dispatcher without one: a pass of a pinned worker writes leases "until pinned + 60 s",
already run out for a live worker's reaper, which takes the text while the pinned
worker's request is on its way, finds it not at Twilio yet, requeues it, and the live
dispatcher sends it again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.messaging.reconcile import reap_stale
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop
from tests.messaging.helpers import dispatch, midday_zone, seed
from tests.messaging.test_pinned_behind_tick import SlowCreate


def test_a_worker_pinned_behind_the_hosts_clock_is_not_sent_twice_by_a_live_workers_reaper(
    runtime: Runtime,
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
) -> None:
    real_now = datetime.now(UTC).replace(microsecond=0)
    pinned = real_now - timedelta(hours=1)  # `followup --now <an hour ago> worker`
    [text_id] = seed(
        session,
        1,
        due=pinned - timedelta(hours=1),
        expires=real_now + timedelta(days=1),
        tz=midday_zone(real_now),
    )
    transport = SlowCreate(provider_has=[])

    def live_worker_runs_meanwhile() -> None:
        # The live worker (real clock): its reaper's round, then its dispatcher's pass,
        # while the pinned worker's create is on its way to Twilio.
        now = datetime.now(UTC)
        reap_stale(session=other_session, transport=transport, now=now, owner="worker/reap")
        other_session.commit()
        dispatch(other_session, transport, care, now, owner="worker")

    transport.meanwhile = live_worker_runs_meanwhile
    pinned_worker = Runtime(
        settings=runtime.settings,
        clock=FakeClock(pinned),  # what `followup --now` builds; host_clock: this host's
        engine=runtime.engine,
        session_factory=runtime.session_factory,
        care=care,
        transport=transport,
        owner="pinned-worker",
        pinned=True,  # as `followup --now` builds it (CliState.runtime)
    )
    loop = DispatchLoop(pinned_worker)
    try:
        loop.step()
    finally:
        loop.dispatcher.close()

    session.expire_all()
    message = session.get(Message, text_id)
    assert message is not None
    assert [s.message_id for s in transport.sent] == [text_id], (
        f"the text reached Twilio {len(transport.sent)} times "
        f"(recorded {message.status}, sid {message.provider_sid})"
    )
