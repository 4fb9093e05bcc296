"""A text due now, while Twilio is slow to answer the reaper's look-up about another
patient's text (parked after a 5xx, its retry time come).

The dispatcher loop now runs the reaper inline, on its own thread, before its pass
(`DispatchLoop.step` -> `reap_parked` -> `tasks.reap`): a whole reaper pass (every stale
text, closed copies, held reports), each look-up a list request of up to
TWILIO_TIMEOUT_SECONDS per page. Until it ends no text of any patient is claimed or
handed over: the blood-thinner restart due at 08:00 waits for Twilio's list API, which is
slow exactly when texts get parked (an outage answering 5xx and timing out), and again at
every retry of the look-up (`ask_after`: 15 s later). Before, the reaper ran on the
scheduler's thread and the dispatcher's passes went on beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.models import SENDING, Message
from followup.messaging.transports.base import OutgoingSms, SendResult
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import midday_zone, seed

SLOW_LIST = 5.0  # seconds Twilio takes to answer the reaper's list request (at most)


class SlowToList(ScriptedTransport):
    """Creates are answered at once; a list request takes SLOW_LIST seconds, or until a
    create came meanwhile (the test need not wait when the dispatcher does not)."""

    def __init__(self) -> None:
        super().__init__(provider_has=[])
        self.created = threading.Event()
        self.created_while_listing: list[bool] = []

    def send(self, sms: OutgoingSms) -> SendResult:
        self.created.set()
        return super().send(sms)

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        self.created_while_listing.append(self.created.wait(SLOW_LIST))
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def test_a_due_text_is_handed_over_while_the_reaper_waits_for_twilios_list(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    tz = midday_zone(clock.now())
    [parked, due] = seed(
        session,
        2,
        due=clock.now() - timedelta(minutes=5),
        expires=clock.now() + timedelta(hours=6),
        tz=tz,
    )
    # A 503 on the first text's create 2 minutes ago: parked for the reaper until now.
    session.execute(
        sa.update(Message)
        .where(Message.id == parked)
        .values(
            status=SENDING,
            lease_owner="test-worker/reap",
            handed_at=clock.now() - timedelta(minutes=2),
            lease_expires_at=clock.now(),
            attempts=1,
            to_phone="+12025550000",
            body="Please do not drive today.",
        )
    )
    session.commit()
    transport = SlowToList()
    worker = Runtime(**{**runtime.__dict__, "transport": transport})
    loop = DispatchLoop(worker)
    try:
        loop.step()
        assert loop.wait_for_reaps()  # the prompt reaper's look-up, on its own thread
    finally:
        loop.dispatcher.close()

    assert due in [sms.message_id for sms in transport.sent]
    assert transport.created_while_listing == [True], (
        f"the text due now reached Twilio only after the reaper's list request answered "
        f"({SLOW_LIST} s later): every due text waited for the reaper's look-ups"
    )
