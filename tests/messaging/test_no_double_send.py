"""No text is lost and none is sent twice, whenever the dispatcher dies or the network lies.

The dispatcher is "killed" with an exception no handler catches (as a dead process would
stop), its session is thrown away uncommitted, and a second worker takes over after the
lease: the reaper asks the fake Twilio what it has before anything is sent again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import PENDING, SENDING, SENT, Message
from followup.messaging.tick import run_tick
from followup.messaging.transports.base import OutgoingSms, SendResult
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.settings import Settings
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import dispatch, event_details, event_kinds, messages

ROOT = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """The process died here: nothing after this line of the dispatcher runs."""


class KillingTransport:
    """The real transport, with the process dying just before or just after Twilio answers."""

    name = "killing"

    def __init__(self, inner: TwilioTransport, when: str) -> None:
        self.inner = inner
        self.when = when
        self.answered = False

    def send(self, sms: OutgoingSms) -> SendResult:
        if self.when == "before-request":
            raise Killed
        result = self.inner.send(sms)
        self.answered = True
        if self.when == "after-201":
            raise Killed
        return result

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        return self.inner.find_sent(to=to, body=body, since=since, exclude=exclude)


@pytest.fixture
def enrolled(enroll: Callable[..., EnrollmentResult]) -> EnrollmentResult:
    return enroll()


def take_over(
    session_factory: so.sessionmaker[so.Session],
    transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    """A second worker's tick once the dead one's lease has run out."""
    clock.advance(LEASE + timedelta(seconds=1))
    with session_factory() as session:
        run_tick(session=session, transport=transport, care=care, clock=clock, owner="w2")


def assert_sent_once(session: so.Session, fake: FakeTwilio, *, creates: int = 1) -> None:
    """One text at Twilio, recorded with its SID; `creates` POSTs were made in all."""
    text = messages(session)["no-driving"]
    assert len(fake.creates()) == creates
    [at_twilio] = fake.messages.values()
    assert text.status == SENT
    assert text.provider_sid == at_twilio["sid"]
    assert at_twilio["body"] == text.body


@pytest.mark.parametrize("when", ["claim-commit", "before-request", "after-201", "at-commit"])
def test_dispatcher_killed_at_any_point_sends_each_text_exactly_once(
    when: str,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    killing = KillingTransport(twilio_transport, when)
    doomed = session_factory()
    commits = 0

    def die_at_commit(_session: so.Session) -> None:
        nonlocal commits
        commits += 1
        # Commit 1 records the expiry sweep, commit 2 the claim.
        if (when == "claim-commit" and commits == 2) or (when == "at-commit" and killing.answered):
            raise Killed

    sa.event.listen(doomed, "before_commit", die_at_commit)
    with pytest.raises(Killed):
        dispatch(doomed, killing, care, clock.now(), owner="w1")
    doomed.close()  # the process is gone: what it had not committed is rolled back

    text = messages(session)["no-driving"]
    expected_creates = 1 if when in ("after-201", "at-commit") else 0
    assert len(twilio_fake.creates()) == expected_creates
    assert text.status == (PENDING if when == "claim-commit" else SENDING)

    take_over(session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake)
    text = messages(session)["no-driving"]
    if expected_creates:
        assert "reconciled" in event_kinds(session, text.id)

    # And nothing more goes out on later passes.
    take_over(session_factory, twilio_transport, care, clock)
    assert len(twilio_fake.creates()) == 1


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    from followup.clock import FakeClock
    from followup.messaging.dispatch import dispatch_due
    from followup.messaging.transports.twilio import TwilioTransport
    from followup.runtime import build_care
    from followup.db import make_engine, make_session_factory
    from followup.settings import Settings

    url, base, sid, token, now = sys.argv[1:6]
    settings = Settings(
        database_url=url, sms_transport="twilio", twilio_account_sid=sid,
        twilio_auth_token=token, twilio_from_number="+12025550199",
        twilio_api_base_url=base, clinic_name="Riverside Spine Center",
        clinic_phone="(202) 555-0100",
    )
    transport = TwilioTransport.from_settings(settings)
    real_send = transport.send

    def send_then_die(sms):
        real_send(sms)  # Twilio answered 201 ...
        os._exit(17)    # ... and the process is killed before the commit

    transport.send = send_then_die
    session = make_session_factory(make_engine(url))()
    dispatch_due(session=session, transport=transport, care=build_care(settings),
                 clock=FakeClock(datetime.fromisoformat(now)), owner="doomed")
    sys.exit(3)  # not reached
    """
)


@pytest.mark.slow
def test_dispatcher_process_killed_after_201_is_reconciled_not_resent(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    database_url: str,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    args = [database_url, twilio_fake.base_url, twilio_fake.account_sid, twilio_fake.auth_token]
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, *args, clock.now().isoformat()],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 17, done.stderr
    assert len(twilio_fake.creates()) == 1
    assert messages(session)["no-driving"].status == SENDING

    take_over(session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake)


# --- the network's lies -------------------------------------------------------------------


def _dispatch_once_then_settle(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> None:
    dispatch(session, transport, care, clock.now(), owner="w1")
    text = messages(session)["no-driving"]
    assert text.status == SENDING  # outcome unknown: held for reconciliation, not retried
    assert "outcome-unknown" in event_kinds(session, text.id)
    take_over(session_factory, transport, care, clock)


def test_5xx_after_twilio_accepted_is_reconciled_not_resent(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.fail_after_accept = 1
    _dispatch_once_then_settle(session, session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake)
    text = messages(session)["no-driving"]
    assert event_details(session, text.id, "reconciled") == [
        f"found at provider: sid {text.provider_sid}"
    ]


def test_connection_dropped_after_twilio_accepted_is_reconciled_not_resent(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.drop_after_accept = 1
    _dispatch_once_then_settle(session, session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake)


@pytest.fixture
def impatient_transport(twilio_settings: Settings) -> Iterator[TwilioTransport]:
    transport = TwilioTransport.from_settings(replace(twilio_settings, twilio_timeout_seconds=0.3))
    yield transport
    transport.close()


def test_timeout_after_twilio_accepted_is_reconciled_not_resent(
    twilio_fake: FakeTwilio,
    impatient_transport: TwilioTransport,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.latency_after_accept = 0.8
    dispatch(session, impatient_transport, care, clock.now(), owner="w1")
    assert messages(session)["no-driving"].status == SENDING
    twilio_fake.latency_after_accept = 0
    # The second worker has the usual timeout: with 0.3 s its own question to Twilio could
    # time out on a loaded machine, and it would (rightly) ask again later instead.
    take_over(session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake)


def test_5xx_before_twilio_accepted_is_sent_again_exactly_once(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.fail_next = 1  # Twilio answered 500 and kept nothing
    _dispatch_once_then_settle(session, session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake, creates=2)  # the refused POST, then the real one
    text = messages(session)["no-driving"]
    kinds = event_kinds(session, text.id)
    assert kinds.index("requeued") < kinds.index("sent")
    assert text.attempts == 2


def test_a_5xx_for_one_of_two_identical_texts_to_one_number_is_not_taken_for_the_other(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    # One patient, two procedures the same afternoon: two no-driving texts, word for word
    # the same, to one number. The first is created; the second's create is answered 500
    # before Twilio kept it. Asked about the second, Twilio lists the first: it is looked
    # past (its SID is recorded for the other text) and the second is sent again.
    enroll(procedure="kyphoplasty", completed_at="2026-03-06T14:00")
    enroll(procedure="vertebroplasty", completed_at="2026-03-06T14:30")
    first, second = session.scalars(
        sa.select(Message).where(Message.step == "no-driving").order_by(Message.id)
    ).all()
    with Dispatcher(
        transport=twilio_transport, care=care, clock=clock, owner="w1", concurrency=1
    ) as dispatcher:
        dispatcher.dispatch(session, limit=1)
        twilio_fake.fail_next = 1
        dispatcher.dispatch(session, limit=1)
    session.expire_all()
    assert (first.status, second.status) == (SENT, SENDING)
    assert first.body == second.body and first.to_phone == second.to_phone
    take_over(session_factory, twilio_transport, care, clock)
    session.expire_all()
    assert (first.status, second.status) == (SENT, SENT)
    assert len(twilio_fake.messages) == 2
    assert {first.provider_sid, second.provider_sid} == set(twilio_fake.messages)
    assert "requeued" in event_kinds(session, second.id)


def test_reaper_holds_the_text_while_twilio_cannot_be_asked(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    twilio_fake.fail_after_accept = 1
    dispatch(session, twilio_transport, care, clock.now(), owner="w1")
    twilio_fake.fail_next = 1  # the reaper's list request fails too
    clock.advance(LEASE)
    with session_factory() as other:
        run_tick(session=other, transport=twilio_transport, care=care, clock=clock, owner="w2")
    assert messages(session)["no-driving"].status == SENDING  # not resent on a guess
    assert len(twilio_fake.creates()) == 1
    take_over(session_factory, twilio_transport, care, clock)
    assert_sent_once(session, twilio_fake)


def test_connection_refused_is_retried_without_reconciling(
    twilio_fake: FakeTwilio,
    twilio_settings: Settings,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    with FakeTwilio() as closed:
        down = closed.base_url
    unreachable = TwilioTransport.from_settings(replace(twilio_settings, twilio_api_base_url=down))
    try:
        dispatch(session, unreachable, care, clock.now())
    finally:
        unreachable.close()
    text = messages(session)["no-driving"]
    assert text.status == PENDING
    assert text.not_before is not None
    clock.set(text.not_before)
    dispatch(session, twilio_transport, care, clock.now())
    assert_sent_once(session, twilio_fake)
