"""7f98d28 decides the "a nurse will read your message" answer again after the reply is
stored, under the patient's row lock, so two questions a second apart get it once. It does
so only when the reply matched a patient: a number that matches none (a patient texting
from a relative's phone, or from a new number not yet on file) is answered by number
(`_answered_lately` reads `from_phone`), and its two questions a second apart are still
answered twice, each request having read "not answered lately" before the other's reply
was stored. The promise (README; replies.READING_ANSWER_EVERY) is once per sender per 12
hours."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import InboundMessage
from followup.messaging.replies import record_inbound
from tests.messaging.helpers import at
from tests.messaging.test_stop_start_races import HOURS

UNKNOWN = "+12025550177"  # on file for no patient


def _reply(session: so.Session, care: CareContext, body: str, sid: str, now: datetime) -> None:
    record_inbound(
        session=session,
        provider_sid=sid,
        from_phone=UNKNOWN,
        body=body,
        opt_out_type=None,
        care=care,
        clinic_hours=HOURS,
        clinic_zone="America/New_York",
        now=now,
    )


def test_two_questions_from_an_unknown_number_get_the_reading_answer_once(
    session: so.Session,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
) -> None:
    clock.set(at("2026-03-06T16:00"))
    asked_at = clock.now()
    storing = threading.Event()
    errors: list[BaseException] = []

    def mark(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO INBOUND_MESSAGES"):
            storing.set()

    def second() -> None:
        try:
            with session_factory() as other:
                _reply(
                    other, care, "Also, when can I drive again?", "SM" + "2" * 32,
                    asked_at + timedelta(seconds=1),
                )  # fmt: skip
                other.commit()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)
            storing.set()

    with session_factory() as first:
        _reply(first, care, "Can I take a shower tonight?", "SM" + "1" * 32, asked_at)
        # The second question's request is storing its reply while the first's
        # transaction is still open (two web workers; on SQLite, waiting for the lock).
        sa.event.listen(engine, "before_cursor_execute", mark)
        thread = threading.Thread(target=second)
        try:
            thread.start()
            assert storing.wait(20), "the second reply was never stored"
            first.commit()
            thread.join(40)
            assert not thread.is_alive()
        finally:
            sa.event.remove(engine, "before_cursor_execute", mark)
    if errors:
        raise errors[0]

    session.expire_all()
    rows = session.scalars(sa.select(InboundMessage).order_by(InboundMessage.received_at)).all()
    assert [(r.patient_id, r.needs_attention) for r in rows] == [(None, True)] * 2
    answered = [r.answer_kind for r in rows]
    assert answered.count("reading") == 1, (
        f"the unknown number was sent 'a nurse will read your message' "
        f"{answered.count('reading')} times for two questions a second apart: {answered}"
    )
