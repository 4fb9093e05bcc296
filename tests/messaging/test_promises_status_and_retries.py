"""The dispatcher's promises after the hand-over, tried the way a bad day tries them, on
SQLite and PostgreSQL:

- forward-only status: `undelivered` and `delivered` callbacks applied at the same time;
- retries until the window closes: a four-hour create outage inside a 48-hour window;
- wake-up: the running loop sends what another connection wrote, and sleeps until the
  next due text and no longer; after a failed pass, its claimed texts go again at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock, SystemClock
from followup.inbox.queue import attention_queue
from followup.messaging.claims import next_wake
from followup.messaging.models import (
    PENDING,
    SENT,
    UNDELIVERED,
    Message,
    MessageEvent,
)
from followup.messaging.status import record_status_callback
from followup.messaging.tick import run_tick
from followup.messaging.transports.twilio import TwilioTransport
from followup.runtime import Runtime
from followup.settings import Settings
from jobs.dispatcher import ERROR_PAUSE, DispatchLoop
from jobs.scheduler import REAP_EVERY
from tests.fakes.transport import ScriptedTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import (
    midday_zone,
    seed,
    statuses,
)

# --- forward-only status -------------------------------------------------------------------


def test_simultaneous_undelivered_and_delivered_callbacks_never_move_a_status_backwards(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
) -> None:
    now = clock.now()
    ids = seed(
        session,
        100,
        due=now,
        expires=now + timedelta(days=2),
        tz="America/New_York",
        step="blood-thinner-restart",
        blood_thinner="Eliquis",
    )
    session.execute(
        sa.update(Message)
        .where(Message.id.in_(ids))
        .values(status=SENT, provider_sid=sa.literal("SM") + sa.cast(Message.id, sa.String))
    )
    session.commit()
    callbacks = [(f"SM{i}", status) for i in ids for status in ("delivered", "undelivered")]
    random.Random(3).shuffle(callbacks)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def apply(share: list[tuple[str, str]]) -> None:
        barrier.wait()
        for sid, status in share:
            for attempt in range(50):
                try:
                    with session_factory() as s:
                        record_status_callback(
                            session=s,
                            provider_sid=sid,
                            status=status,
                            error_code=30003 if status == "undelivered" else None,
                            now=now,
                        )
                        s.commit()
                    break
                except sa.exc.OperationalError as exc:  # SQLite busy past its timeout
                    if attempt == 49:
                        errors.append(exc)

    threads = [threading.Thread(target=apply, args=(callbacks[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert statuses(session) == {UNDELIVERED: 100}
    # Each text kept both reports in its history, and every one reaches the nurses' queue.
    events = Counter(
        session.scalars(sa.select(MessageEvent.kind).where(MessageEvent.kind == "status-callback"))
    )
    assert events["status-callback"] == 200
    queue = attention_queue(session=session, critical_steps=care.critical_steps())
    assert {item.item_id for item in queue.items if item.kind == "text"} == set(ids)


# --- retries until the window closes -------------------------------------------------------


def test_a_four_hour_create_outage_inside_a_48_hour_window_sends_once_after_recovery(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
) -> None:
    # The blood-thinner restart falls due at 10:00 in New York; its window is 48 hours.
    due = datetime(2026, 3, 9, 10, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    [text_id] = seed(
        session,
        1,
        due=due,
        expires=due + timedelta(hours=48),
        tz="America/New_York",
        step="blood-thinner-restart",
        blood_thinner="Eliquis",
    )
    recovery = due + timedelta(hours=4)
    twilio_fake.creates_down_until = recovery  # every create is answered 503 until then
    clock.set(due)
    ticks = 0
    while ticks < 500:
        with session_factory() as other:
            run_tick(session=other, transport=twilio_transport, care=care, clock=clock, owner="w")
        ticks += 1
        message = session.get(Message, text_id)
        session.refresh(message)  # type: ignore[arg-type]
        assert message is not None
        if message.status != PENDING and message.status != "sending":
            break
        # The worker's next look: its next due text, or the reaper's next round.
        with session_factory() as other:
            wake = next_wake(session=other, now=clock.now())
        lease_end = message.lease_expires_at if message.status == "sending" else None
        candidates = [t for t in (wake, lease_end) if t is not None and t > clock.now()]
        clock.set(min(candidates) + REAP_EVERY if lease_end else min(candidates))
    assert message.status == SENT
    assert len(twilio_fake.messages) == 1  # sent once
    assert recovery <= message.sent_at <= recovery + timedelta(minutes=16)  # type: ignore[operator]
    refused = len(twilio_fake.creates()) - 1
    assert refused >= 4 * 60 // 15  # it kept trying through the outage, never gave up
    assert message.attempts == refused + 1


# --- wake-up ----------------------------------------------------------------------------


def test_the_running_loop_sends_a_text_written_by_another_connection_without_being_woken(
    real_fake: FakeTwilio,
    twilio_settings: Settings,
    database_url: str,
    session: so.Session,
) -> None:
    from followup.runtime import build_runtime
    from jobs.dispatcher import DispatchLoop

    runtime = build_runtime(replace(twilio_settings, database_url=database_url), SystemClock())
    loop = DispatchLoop(runtime)
    loop.start()
    try:
        time.sleep(0.2)  # the loop is idle: nothing is pending
        now = datetime.now(UTC)
        seed(session, 1, due=now, expires=now + timedelta(hours=6), tz=midday_zone())
        # Nobody calls loop.wake(): the loop's own look at the database finds it.
        assert real_fake.wait_for_messages(1, timeout=10)
    finally:
        loop.stop()
        runtime.transport.close()  # type: ignore[attr-defined]
        runtime.engine.dispose()
    assert loop.total.sent == 1


def test_the_loop_sleeps_until_the_next_due_text_and_no_longer(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    from jobs.dispatcher import POLL_EVERY, DispatchLoop

    loop = DispatchLoop(runtime)
    assert loop.step() == POLL_EVERY.total_seconds()  # nothing pending: poll
    now = clock.now()
    seed(
        session,
        1,
        due=now + timedelta(seconds=0.4),
        expires=now + timedelta(hours=1),
        tz="America/New_York",
    )
    assert loop.step() == pytest.approx(0.4)
    seed(
        session,
        1,
        due=now + timedelta(hours=2),
        expires=now + timedelta(hours=3),
        tz="America/New_York",
        first_phone=50,
    )
    clock.advance(timedelta(seconds=0.4))
    assert loop.step() == POLL_EVERY.total_seconds()  # sent; the next is hours away
    assert loop.total.sent == 1
    loop.dispatcher.close()


def run_once_failing_a_turn(
    runtime: Runtime,
    session: so.Session,
    clock: FakeClock,
    transport: ScriptedTransport,
    error: Exception,
) -> tuple[DispatchLoop, float]:
    """Six texts due; a loop of concurrency 2 runs one step whose pass claims them all and
    hands over the first 2, then the commit of its next turn raises `error` (once).
    Returns the loop and what the step said to wait."""
    now = clock.now()
    seed(session, 6, due=now, expires=now + timedelta(hours=6), tz=midday_zone(now))
    two = replace(runtime, settings=replace(runtime.settings, dispatch_concurrency=2))
    loop = DispatchLoop(two)
    failed: list[str] = []

    def fail_once(_session: so.Session) -> None:
        if len(transport.sent) >= 2 and not failed:
            failed.append("turn")
            raise error

    sa.event.listen(runtime.session_factory, "before_commit", fail_once)
    try:
        wait = loop.run_once()
    finally:
        sa.event.remove(runtime.session_factory, "before_commit", fail_once)
    assert failed == ["turn"]
    session.expire_all()
    return loop, wait


def test_a_failed_pass_hands_its_claimed_texts_back_at_once_not_after_the_lease(
    runtime: Runtime,
    session: so.Session,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    # The turn fails as a deadlock's victim (the database rolls it back). The 4 texts
    # claimed and never handed over go again at once, not once their lease has run out;
    # the 2 handed over are left to the reaper (their answers were lost with the turn).
    deadlock = sa.exc.OperationalError("COMMIT", {}, _Deadlock())
    loop, wait = run_once_failing_a_turn(runtime, session, clock, transport, deadlock)
    assert wait == pytest.approx(0.05)  # a deadlock: look again at once
    assert statuses(session) == Counter({PENDING: 4, "sending": 2})
    loop.run_once()  # the clock has not moved: well within the lease
    loop.dispatcher.close()
    sent = [sms.message_id for sms in transport.sent]
    assert len(sent) == len(set(sent)) == 6
    session.expire_all()
    assert statuses(session) == Counter({SENT: 4, "sending": 2})


class _Deadlock(Exception):
    sqlstate = "40P01"


def test_a_pass_failed_by_the_code_itself_leaves_its_claims_to_the_reaper(
    runtime: Runtime,
    session: so.Session,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    # A failure that is not the database's (a bug) would only fail again: the texts stay
    # claimed until their lease runs out, and the loop looks again after ERROR_PAUSE.
    loop, wait = run_once_failing_a_turn(runtime, session, clock, transport, RuntimeError("a bug"))
    loop.dispatcher.close()
    assert wait == ERROR_PAUSE.total_seconds()
    assert statuses(session) == Counter({"sending": 6})


def test_a_loop_started_again_after_a_stop_sends(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    # The scheduler stopped and started again in one process: the loop's passes must not
    # be those of the dispatcher the stop ended for good (they would send nothing).
    loop = DispatchLoop(runtime)
    loop.start()
    loop.stop()
    loop.start()
    try:
        now = clock.now()
        seed(session, 1, due=now, expires=now + timedelta(hours=1), tz=midday_zone(now))
        loop.wake()
        done = threading.Event()
        for _ in range(200):  # the loop's thread, not a timer: look until it has sent
            if loop.total.sent or done.wait(0.05):
                break
    finally:
        loop.stop()
    assert loop.total.sent == 1
