"""Delivery reports that overtake the create's answer: Twilio may call back `failed` before
the dispatcher has committed the SID it answered with. Such a report is held, not lost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import make_engine, make_session_factory
from followup.inbox.queue import UNREACHABLE, attention_queue
from followup.messaging.models import (
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    HeldStatusReport,
    Message,
    MessageEvent,
)
from followup.messaging.reconcile import reap_stale
from followup.messaging.status import HOLD_UNMATCHED, record_status_callback
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import post_signed
from tests.messaging.helpers import dispatch


def _callback(
    client: FlaskClient, runtime: Runtime, sid: str, status: str, code: str | None = None
) -> int:
    form = {"MessageSid": sid, "MessageStatus": status, **({"ErrorCode": code} if code else {})}
    token = runtime.settings.twilio_auth_token or ""
    return post_signed(client, "/twilio/status", form, token=token)[0]


def _held(session: so.Session) -> list[tuple[str, str]]:
    session.expire_all()
    return [
        (h.provider_sid, h.status)
        for h in session.scalars(sa.select(HeldStatusReport).order_by(HeldStatusReport.id))
    ]


def test_a_failure_reported_before_the_create_is_answered_is_applied_when_it_is_recorded(
    twilio_fake: FakeTwilio,
    twilio_runtime: Runtime,
    twilio_transport: TwilioTransport,
    client: FlaskClient,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    patient = enroll().patient  # its no-driving text is due now
    answered: list[int] = []

    def landline(message: dict[str, Any]) -> None:
        # Twilio's callback overtakes its answer: the dispatcher has not recorded the SID.
        answered.append(_callback(client, twilio_runtime, message["sid"], "failed", "30006"))

    twilio_fake.on_create = landline
    report = dispatch(session, twilio_transport, care, clock.now())

    assert report.sent == 1 and answered == [200]
    session.expire_all()
    text = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    assert text.status == FAILED
    assert text.error_code == "30006"
    assert _held(session) == []
    kinds = list(
        session.scalars(
            sa.select(MessageEvent.kind)
            .where(MessageEvent.message_id == text.id)
            .order_by(MessageEvent.id)
        )
    )
    assert kinds[-2:] == ["sent", "status-callback"]
    # The nurses see at once that the patient cannot receive texts.
    queue = attention_queue(session=session, critical_steps=care.critical_steps())
    assert [(i.kind, i.item_id) for i in queue.items if i.kind == UNREACHABLE] == [
        (UNREACHABLE, patient.id)
    ]


def test_reports_held_for_a_text_the_reaper_settles_are_applied_in_the_order_they_came(
    twilio_fake: FakeTwilio,
    twilio_runtime: Runtime,
    twilio_transport: TwilioTransport,
    client: FlaskClient,
    session: so.Session,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    enroll()
    text = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    # A dispatcher handed it over, Twilio took it, and the dispatcher died before recording.
    sid = twilio_fake.add_message(
        to="+12025550143", body="x", created=clock.now(), status="queued"
    )["sid"]
    session.execute(
        sa.update(Message)
        .where(Message.id == text.id)
        .values(
            status=SENDING,
            lease_owner="dead",
            lease_expires_at=clock.now(),
            handed_at=clock.now(),
            to_phone="+12025550143",
            body="x",
        )
    )
    session.commit()
    assert _callback(client, twilio_runtime, sid, "sent") == 200
    clock.advance(timedelta(seconds=5))
    assert _callback(client, twilio_runtime, sid, "delivered") == 200
    assert _held(session) == [(sid, "sent"), (sid, "delivered")]

    clock.advance(timedelta(minutes=1))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())

    assert (report.reconciled, report.early_reports_applied) == (1, 2)
    session.expire_all()
    text = session.get(Message, text.id)  # type: ignore[assignment]
    assert text is not None and text.provider_sid == sid
    assert text.status == DELIVERED
    assert _held(session) == []


def test_a_report_no_text_ever_takes_is_dropped_after_a_day(
    twilio_runtime: Runtime,
    twilio_transport: TwilioTransport,
    client: FlaskClient,
    session: so.Session,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    enroll()
    assert _callback(client, twilio_runtime, "SM" + "0" * 32, "delivered") == 200
    clock.advance(HOLD_UNMATCHED - timedelta(minutes=1))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())
    assert (report.early_reports_applied, report.early_reports_dropped) == (0, 0)
    assert len(_held(session)) == 1  # still waiting
    clock.advance(timedelta(minutes=1))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())
    assert (report.early_reports_applied, report.early_reports_dropped) == (0, 1)
    assert _held(session) == []
    # A report for a text already recorded is applied directly, never held.
    session.execute(
        sa.update(Message)
        .where(Message.step == "no-driving")
        .values(status=SENT, provider_sid="SMx")
    )
    session.commit()
    assert _callback(client, twilio_runtime, "SMx", "delivered") == 200
    assert _held(session) == []


@pytest.mark.parametrize(
    ("reported", "code", "ends"),
    [("delivered", None, DELIVERED), ("failed", 30001, PENDING)],
    ids=["delivered", "failed-30001-retried"],
)
def test_a_report_arriving_while_the_sid_is_being_committed_is_applied_not_dropped(
    reported: str,
    code: int | None,
    ends: str,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    session: so.Session,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    # PostgreSQL, READ COMMITTED: the callback's UPDATE by SID runs while the dispatcher's
    # transaction recording that SID is still open (it matches nothing and does not wait);
    # the dispatcher commits before the callback reads the text again. The report must be
    # applied, not counted as "kept sent" and lost; a failure that passes (30001) retries
    # the text there too, not fails it for good.
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's callback waits for the dispatcher's write lock: no such window")
    enroll()
    text_id = session.scalars(sa.select(Message.id).where(Message.step == "no-driving")).one()
    session.execute(sa.update(Message).where(Message.id == text_id).values(status=SENDING))
    session.commit()
    dispatcher = session_factory()
    dispatcher.execute(
        sa.update(Message)
        .where(Message.id == text_id)
        .values(status=SENT, provider_sid="SM-racing", sent_at=clock.now())
    )
    callback_engine = make_engine(engine.url.render_as_string(hide_password=False))
    seen: list[str] = []

    def commit_the_sid_after_the_callbacks_update(
        _conn: Any, _cursor: Any, statement: str, *_args: Any
    ) -> None:
        if statement.lstrip().upper().startswith("UPDATE MESSAGES") and not seen:
            seen.append(statement)
            dispatcher.commit()

    sa.event.listen(
        callback_engine, "after_cursor_execute", commit_the_sid_after_the_callbacks_update
    )
    try:
        with make_session_factory(callback_engine)() as callback:
            changed = record_status_callback(
                session=callback,
                provider_sid="SM-racing",
                status=reported,
                error_code=code,
                now=clock.now(),
            )
            callback.commit()
    finally:
        dispatcher.close()
        callback_engine.dispose()
    assert seen and changed is True
    session.expire_all()
    assert session.get(Message, text_id).status == ends  # type: ignore[union-attr]
