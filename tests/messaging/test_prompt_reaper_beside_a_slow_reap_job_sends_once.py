"""One worker process, one text whose outcome is unknown (a Twilio 500 on the create), and
both of the process's reapers: the reap job's (`tasks.reap`, under `<owner>/reap`) and
the dispatcher loop's prompt reaper (`<owner>~/reap`, texts parked for the reaper only).

The reap job takes the parked text and asks Twilio about it; Twilio, in the outage that
answered 500, is slow to list (pages of up to TWILIO_TIMEOUT_SECONDS each), and the job's
lease on the text (60 s) runs out while it waits. The text is then `sending` under a name
ending "/reap" with its lease run out: to the loop, a parked text whose retry time came.
Its prompt reaper takes it, finds nothing, requeues it; the loop sends it again, and
Twilio creates it this time but again answers 500: the dispatcher parks it under
`reaper_owner(owner)`, which is the reap job's own name. The job's answer ("not found",
as Twilio listed before the second request) then comes, and its guard (status `sending`,
lease owner its own name, handed over no earlier than what it read) lets it requeue the
text: the second request is never asked about, and the patient gets the text twice.

Before 2026-12-02 the loop's reap was skipped while the job's pass was under way.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.claims import LEASE, parked_owner
from followup.messaging.models import SENDING, Message
from followup.messaging.reports import ReapReport
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.runtime import Runtime
from jobs import tasks
from jobs.dispatcher import DispatchLoop
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import event_details, midday_zone, seed

PHONE = "+12025550000"  # `seed`'s first number
BODY = "Please do not drive today."


class SlowListDuringAnOutage(ScriptedTransport):
    """Twilio in an outage. The first create it gets is made but answered 500 (outcome
    unknown); creates after it are accepted. The reap job's list request (thread
    "reap-job") is answered as Twilio's list stood when it was asked, once the test lets
    it; others are answered at once."""

    def __init__(self) -> None:
        super().__init__(provider_has=[])
        self.requests = 0
        self.job_asking = threading.Event()
        self.job_answer = threading.Event()

    def send(self, sms: OutgoingSms) -> SendResult:
        with self._lock:
            self.requests += 1
            first = self.requests == 1
            if first:  # created at Twilio, but the answer is a 500
                assert self.provider_has is not None
                self.provider_has.append((sms.to, sms.body, "SM-created-then-500"))
        if first:
            raise TransientSendError("500", "Twilio server error", maybe_sent=True)
        return super().send(sms)

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        answer = super().find_sent(to=to, body=body, since=since, exclude=exclude)
        if threading.current_thread().name == "reap-job":
            self.job_asking.set()
            self.job_answer.wait(30)
        return answer

    def copies_to(self, phone: str) -> list[str]:
        return [sid for to, _, sid in self.provider_has or [] if to == phone]


def test_a_text_the_reap_job_is_slow_to_ask_about_reaches_the_patient_once(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    start = clock.now()
    [text_id] = seed(
        session,
        1,
        due=start - timedelta(minutes=10),
        expires=start + timedelta(hours=6),
        tz=midday_zone(start),
    )
    # A 503 on its create two minutes ago (Twilio did not make it): parked for the
    # reaper under this worker's reaper name until its retry time, now.
    session.execute(
        sa.update(Message)
        .where(Message.id == text_id)
        .values(
            status=SENDING,
            lease_owner=parked_owner("test-worker"),
            handed_at=start - timedelta(minutes=2),
            lease_expires_at=start,
            attempts=1,
            to_phone=PHONE,
            body=BODY,
        )
    )
    session.commit()
    transport = SlowListDuringAnOutage()
    worker = Runtime(**{**runtime.__dict__, "transport": transport})
    loop = DispatchLoop(worker)
    loop.dispatcher.rng = random.Random(7)
    job_reports: list[ReapReport] = []
    # The reap job's round: it takes the text and asks Twilio, which is slow to list.
    job = threading.Thread(target=lambda: job_reports.append(tasks.reap(worker)), name="reap-job")
    job.start()
    try:
        assert transport.job_asking.wait(10)
        # Twilio still listing, the job's lease on the text runs out: the loop looks.
        clock.set(start + LEASE + timedelta(seconds=1))
        loop.step()
        assert loop.wait_for_reaps()  # its prompt reaper asks (nothing there) and requeues
        loop.step()  # sent again: created at Twilio, answered 500 (parked for the reaper)
        assert loop.wait_for_reaps()
        session.expire_all()
        parked = session.get(Message, text_id)
        assert parked is not None
        # Parked under a name no reaper pass takes leases under (`parked_owner`): the
        # job's late answer is not taken for its own.
        assert (parked.status, parked.lease_owner) == (SENDING, parked_owner("test-worker"))
        transport.job_answer.set()  # Twilio answers the job's list request at last
        job.join(30)
        clock.advance(timedelta(seconds=1))
        loop.step()  # the loop's next look
        assert loop.wait_for_reaps()
    finally:
        transport.job_answer.set()
        job.join(30)
        loop.stop()

    assert len(transport.copies_to(PHONE)) == 1, (
        f"the patient got the text {len(transport.copies_to(PHONE))} times "
        f"({transport.copies_to(PHONE)}); the reap job's late 'not found' requeued it: "
        f"{event_details(session, text_id, 'requeued')}; job: {job_reports}"
    )
