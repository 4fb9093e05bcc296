"""The dispatcher's sending promises, tried the way a bad day tries them, on SQLite and
PostgreSQL (forward-only status, retries and wake-up: test_promises_status_and_retries.py).

- never twice: a Twilio slow enough that a batch outlives its lease, with two dispatchers
  (one of them stalling) and a reaper racing them; a dispatcher process killed (SIGKILL)
  in the middle of a batch;
- never late past expiry, never at night: a batch straddling an expiry and the start of
  quiet hours, measured at the fake Twilio's receive time.

These use the real clock where real concurrency matters, with small latencies and bounded
waits; none sleeps to wait for a scheduler.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import zone
from followup.clock import FakeClock, SystemClock
from followup.db import make_engine, make_session_factory
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import (
    EXPIRED,
    PENDING,
    SENT,
    Message,
    MessageEvent,
)
from followup.messaging.reconcile import reap_stale
from followup.messaging.tick import run_tick
from followup.messaging.transports.pacing import Pacer
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.models import Patient
from followup.settings import Settings
from jobs.scheduler import REAP_EVERY
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import (
    assert_each_at_twilio_once,
    midday_zone,
    quick_transport,
    seed,
    statuses,
)

ROOT = Path(__file__).resolve().parents[2]


# --- never twice ---------------------------------------------------------------------------


def test_slow_twilio_outliving_the_lease_with_two_dispatchers_sends_each_text_once(
    real_fake: FakeTwilio,
    twilio_settings: Settings,
    database_url: str,
    session: so.Session,
    care: CareContext,
) -> None:
    clock = SystemClock()
    now = clock.now()
    seed(session, 40, due=now, expires=now + timedelta(hours=6), tz=midday_zone())
    real_fake.latency = 0.15  # 40 texts two at a time: 3 s, the length of a lease
    lease = timedelta(seconds=1)  # raised to two call allowances: 3 s
    stop = threading.Event()
    errors: list[BaseException] = []
    engines = [make_engine(database_url) for _ in range(3)]
    transports = [quick_transport(twilio_settings) for _ in range(3)]

    # Dispatcher A claims everything, then stalls for longer than its lease (a pause, a
    # slow disk) between two hand-overs: the reaper settles what it held, B sends the rest,
    # and A, waking up, must send none of it again.
    stalled = threading.Event()

    class StallingPacer(Pacer):
        turns = 0

        def take(self, wanted: int) -> int:
            self.turns += 1
            if self.turns == 3:
                stalled.set()
                time.sleep(5)  # the 3 s lease runs out; the reaper has 2 s to see it
            return super().take(wanted)

    def dispatcher(index: int, owner: str) -> None:
        factory = make_session_factory(engines[index])
        with Dispatcher(
            transport=transports[index],
            care=care,
            clock=clock,
            owner=owner,
            concurrency=2,
            lease=lease,
            heartbeat=timedelta(seconds=0.3),
            pacer=StallingPacer() if owner == "A" else None,
        ) as d:
            while not stop.is_set():
                try:
                    with factory() as s:
                        d.dispatch(s)
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return
                time.sleep(0.05)

    def reaper() -> None:
        factory = make_session_factory(engines[2])
        while not stop.is_set():
            with factory() as s:
                reap_stale(session=s, transport=transports[2], now=clock.now(), owner="R/reap")
            time.sleep(0.1)

    threads = [
        threading.Thread(target=dispatcher, args=(0, "A")),
        threading.Thread(target=dispatcher, args=(1, "B")),
        threading.Thread(target=reaper),
    ]
    threads[0].start()
    try:
        deadline = time.monotonic() + 30
        while statuses(session)["sending"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # A has claimed: now B and the reaper join in
        for t in threads[1:]:
            t.start()
        while time.monotonic() < deadline and statuses(session)[SENT] < 40:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for transport in transports:
            transport.close()
        for engine in engines:
            engine.dispose()
    assert not errors, errors
    assert stalled.is_set()
    assert statuses(session) == {SENT: 40}
    assert_each_at_twilio_once(session, real_fake)
    # A's stall cost it its claims: the reaper requeued them (or recorded what Twilio had
    # from A) and B sent the rest; A's own late writes found nothing left to do.
    kinds = Counter(session.scalars(sa.select(MessageEvent.kind)))
    assert kinds["requeued"] > 0, kinds
    owners = Counter(
        session.scalars(sa.select(MessageEvent.detail).where(MessageEvent.kind == "claimed"))
    )
    assert owners["by B"] > 0 and owners["by A"] > 0, owners


KILLED_DISPATCHER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta
    from followup.clock import FakeClock
    from followup.db import make_engine, make_session_factory
    from followup.messaging.dispatch import Dispatcher
    from followup.messaging.transports.twilio import TwilioTransport
    from followup.runtime import build_care
    from followup.settings import Settings

    url, base, sid, token, now = sys.argv[1:6]
    settings = Settings(
        database_url=url, sms_transport="twilio", twilio_account_sid=sid,
        twilio_auth_token=token, twilio_from_number="+12025550199",
        twilio_api_base_url=base, twilio_timeout_seconds=2,
        clinic_name="Riverside Spine Center", clinic_phone="(202) 555-0100",
    )
    transport = TwilioTransport.from_settings(settings)
    session = make_session_factory(make_engine(url))()
    dispatcher = Dispatcher(
        transport=transport, care=build_care(settings),
        clock=FakeClock(datetime.fromisoformat(now)), owner="doomed", concurrency=4,
    )
    print("dispatching", flush=True)
    dispatcher.dispatch(session)
    print("finished", flush=True)  # the test kills it long before
    """
)


@pytest.mark.slow
def test_dispatcher_killed_mid_batch_everything_settled_within_two_minutes_nothing_twice(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    database_url: str,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
) -> None:
    start = clock.now()  # 15:00 in New York: no quiet hours, a window to 21:00
    seed(session, 60, due=start, expires=start + timedelta(hours=6), tz="America/New_York")
    twilio_fake.latency = 0.05  # 60 texts four at a time: about 0.75 s
    # From the 20th text on, Twilio creates each text and holds its answer until the kill:
    # however slowly this machine runs the test, the process dies mid-batch with texts at
    # Twilio that it never heard about.
    killed = threading.Event()

    def hold_answers_from_the_20th(_message: dict[str, Any]) -> None:
        if len(twilio_fake.messages) >= 20:
            killed.wait(30)

    twilio_fake.on_create = hold_answers_from_the_20th
    args = [database_url, twilio_fake.base_url, twilio_fake.account_sid, twilio_fake.auth_token]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_DISPATCHER, *args, start.isoformat()],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = twilio_fake.wait_for_messages(20, timeout=60)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # kill -9, mid-batch
        killed.set()
        _out, err = process.communicate(timeout=30)
    assert started, err
    assert process.returncode == -signal.SIGKILL
    assert twilio_fake.wait_idle(10)  # a request the dead process had sent still completes
    before = len(twilio_fake.messages)
    assert 20 <= before < 60
    left = statuses(session)
    assert left[SENT] < before  # Twilio has texts the database never heard about

    # The worst case for a live worker: the dead one's last lease runs out, and the reaper
    # comes round only a whole interval later. Its pass, then the dispatcher's.
    clock.set(start + LEASE + REAP_EVERY)
    assert clock.now() - start <= timedelta(minutes=2)
    with session_factory() as other:
        report = run_tick(
            session=other, transport=twilio_transport, care=care, clock=clock, owner="survivor"
        )
    assert report.reap.stale == 60 - left[SENT] - left[PENDING]
    assert report.reap.reconciled >= before - left[SENT]
    assert statuses(session) == {SENT: 60}
    assert_each_at_twilio_once(session, twilio_fake)
    assert len(twilio_fake.creates()) == 60  # not one create more than texts


# --- never late past expiry, never at night ------------------------------------------------


class ShiftedClock:
    """The real clock's pace from a chosen instant: time moves, across a chosen boundary."""

    def __init__(self, start: datetime) -> None:
        self.offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def at(self, epoch: float) -> datetime:
        """The instant on this clock of a real time.time() reading."""
        return datetime.fromtimestamp(epoch, UTC) + self.offset


def test_a_batch_straddling_expiry_and_quiet_hours_sends_nothing_late(
    twilio_fake: FakeTwilio,
    twilio_settings: Settings,
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
) -> None:
    new_york = ZoneInfo("America/New_York")
    # 20:59:56 in New York: quiet hours start in 4 s there. The Chicago patients' no-driving
    # texts (sent first: due a minute earlier) expire in 3 s.
    boundary = datetime(2026, 3, 6, 21, 0, tzinfo=new_york).astimezone(UTC)
    now = boundary - timedelta(seconds=4)
    quiet = seed(
        session,
        30,
        due=now - timedelta(hours=2),
        expires=now + timedelta(days=2),  # a long window: deferred to the morning, not lost
        tz="America/New_York",
        step="blood-thinner-restart",
        blood_thinner="Eliquis",
    )
    closing = seed(
        session,
        30,
        due=now - timedelta(hours=2, minutes=1),
        expires=boundary - timedelta(seconds=1),
        tz="America/Chicago",
        first_phone=100,
    )
    # The clock starts once the texts are in (seeding takes a while on a loaded machine,
    # and the Chicago texts have only a second to go out before their margin).
    clock = ShiftedClock(now)
    twilio_fake.now = clock.now
    twilio_fake.latency = 0.12  # 2 at a time: 30 texts take 1.8 s, 60 take 3.6 s
    transport = TwilioTransport.from_settings(twilio_settings)
    try:
        with (
            session_factory() as other,
            Dispatcher(
                transport=transport, care=care, clock=clock, owner="w", concurrency=2
            ) as dispatcher,
        ):
            report = dispatcher.dispatch(other)
    finally:
        transport.close()
    got = twilio_fake.received()
    phone_of = dict(session.execute(sa.select(Message.id, Patient.phone).join(Patient)).all())
    tz_of = dict(session.execute(sa.select(Message.id, Patient.timezone).join(Patient)).all())
    by_phone = {phone_of[i]: i for i in quiet + closing}
    sent_phones = {c["to"] for c in got}
    # Both boundaries fell inside the batch: some of each group went out, some did not.
    assert 0 < len(sent_phones & {phone_of[i] for i in closing}) < 30
    assert 0 < len(sent_phones & {phone_of[i] for i in quiet}) < 30
    session.expire_all()
    for create in got:
        message = session.get(Message, by_phone[create["to"]])
        assert message is not None
        reached = clock.at(create["received_at"])
        assert reached < message.expires_at, "reached Twilio after its expiry"
        local = reached.astimezone(zone(tz_of[message.id])).time()
        assert not care.quiet_hours.contains(local), "reached Twilio in quiet hours"
        assert message.status == SENT
        assert abs(message.sent_at - reached) < timedelta(seconds=1)  # type: ignore[operator]
    unsent = {i for i in quiet + closing if phone_of[i] not in {c["to"] for c in got}}
    for i in unsent:
        message = session.get(Message, i)
        assert message is not None
        if i in closing:
            assert message.status == EXPIRED
        else:
            assert message.status == PENDING  # waits for 08:00
            assert message.not_before == datetime(2026, 3, 7, 8, 0, tzinfo=new_york)
    assert report.sent == len(got)
    assert report.expired + report.deferred == len(unsent)
    assert report.claimed == 60
