"""`followup --now` pinned *behind* this host's clock, run as a support `tick`
beside a live worker.

jobs.tasks.tick skips the reaper only for a clock pinned ahead ("one pinned behind judges
them later than they ran out: safe"). But the tick's own dispatcher writes its leases with
the pinned clock too: a hand-over guarded at 13:00 pinned, when it is 14:00 on every other
host, gets a lease "until 13:01", already run out for the live worker's reaper. That reaper
takes the text while the tick's request to Twilio is still under way, asks Twilio (which
has not created it yet), finds nothing, and requeues it; the worker's dispatcher sends it
again, and the tick's answer is recorded on top: the patient gets the text twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import OutgoingSms, SendResult
from followup.runtime import Runtime
from jobs import tasks
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import dispatch, midday_zone, seed


@dataclass
class SlowCreate(ScriptedTransport):
    """The first create takes a while to reach Twilio: `meanwhile` runs before it lands."""

    meanwhile: Callable[[], None] | None = None
    _calls: list[str] = field(default_factory=list)

    def send(self, sms: OutgoingSms) -> SendResult:
        self._calls.append(sms.step)
        if len(self._calls) == 1 and self.meanwhile is not None:
            self.meanwhile()
        return super().send(sms)


def test_a_tick_pinned_behind_the_hosts_clock_is_not_sent_twice_by_a_live_workers_reaper(
    runtime: Runtime,
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
) -> None:
    real_now = datetime.now(UTC).replace(microsecond=0)
    pinned = real_now - timedelta(hours=1)  # `followup --now <an hour ago> tick`
    [text_id] = seed(
        session,
        1,
        due=pinned - timedelta(hours=1),
        expires=real_now + timedelta(days=1),
        tz=midday_zone(real_now),  # 13:00 at the host's time, 12:00 pinned: no quiet hours
    )
    transport = SlowCreate(provider_has=[])

    def live_worker_runs_meanwhile() -> None:
        # The live worker (real clock) runs its reaper and then its dispatcher, as every
        # 20 s, while the tick's create is on its way to Twilio.
        now = datetime.now(UTC)
        reap_stale(session=other_session, transport=transport, now=now, owner="worker/reap")
        other_session.commit()
        dispatch(other_session, transport, care, now, owner="worker")

    transport.meanwhile = live_worker_runs_meanwhile
    tick_runtime = Runtime(
        settings=runtime.settings,
        clock=FakeClock(pinned),  # what `followup --now` builds
        engine=runtime.engine,
        session_factory=runtime.session_factory,
        care=care,
        transport=transport,
        owner="support-tick",
    )
    tasks.tick(tick_runtime, session, pinned=True)

    session.expire_all()
    message = session.get(Message, text_id)
    assert message is not None
    assert [s.message_id for s in transport.sent] == [text_id], (
        f"the text reached Twilio {len(transport.sent)} times "
        f"(recorded {message.status}, sid {message.provider_sid})"
    )
