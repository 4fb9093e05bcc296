"""A reply a nurse must read is answered "a nurse will read your message ..." at most once
per patient in 12 hours (README; replies.READING_ANSWER_EVERY). A patient who sends two
questions a second apart (two webhook requests, handled side by side by two web workers,
or one waiting for SQLite's write lock) must get that answer once, not twice: the second
request decides whether to answer from what it read before the first one committed."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import SENT, InboundMessage
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, dispatch, messages
from tests.messaging.test_stop_start_races import reply, second_reply_while_first_is_open


def test_two_questions_a_second_apart_get_the_reading_answer_once(
    session: so.Session,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    dispatch(session, transport, care, clock.now())
    assert messages(session)["no-driving"].status == SENT
    clock.advance(timedelta(hours=1))
    asked_at = clock.now()
    # Two questions a second apart; the second's request is storing its reply while the
    # first's transaction is still open.
    with session_factory() as first:
        reply(first, care, "Can I take a shower tonight?", "SM" + "1" * 32, asked_at)
        with second_reply_while_first_is_open(
            engine, session_factory, care, "Also, when can I drive again?", "SM" + "2" * 32,
            asked_at + timedelta(seconds=1),
        ):  # fmt: skip
            first.commit()

    session.expire_all()
    rows = session.scalars(sa.select(InboundMessage).order_by(InboundMessage.received_at)).all()
    assert [(r.triage, r.needs_attention) for r in rows] == [("reading", True)] * 2
    answered = [r.answer_kind for r in rows]
    assert answered.count("reading") == 1, (
        f"the patient was sent 'a nurse will read your message' {answered.count('reading')} "
        f"times for two questions a second apart: {answered}"
    )
