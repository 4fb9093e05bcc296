import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import SENDING, SENT, Message
from followup.messaging.transports.base import OutgoingSms, SendResult, mask_phone
from followup.messaging.transports.console import ConsoleTransport
from followup.patients.validation import EnrollmentResult
from tests.messaging.helpers import dispatch, messages


def test_console_prints_a_masked_line_and_appends_json(tmp_path: Path) -> None:
    stream = io.StringIO()
    path = tmp_path / "sms.jsonl"
    transport = ConsoleTransport(stream=stream, file_path=str(path))
    now = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)
    body = "Riverside Spine Center: You had sedation today."
    result = transport.send(
        OutgoingSms(message_id=7, step="no-driving", to="+12025550143", body=body, now=now)
    )
    transport.send(OutgoingSms(message_id=8, step="soreness", to="+12025550143", body="x", now=now))
    line = stream.getvalue().splitlines()[0]
    assert line == "[sms console] message=7 step=no-driving to=+1******0143 segments=1"
    assert "Riverside" not in stream.getvalue() and "5550143" not in stream.getvalue()
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert records[0] == {
        "message_id": 7,
        "step": "no-driving",
        "to": "+12025550143",
        "body": body,
        "sent_at": "2026-03-06T20:00:00+00:00",
    }
    assert len(records) == 2
    assert result.provider_sid.startswith("console-")


def test_mask_phone_keeps_country_and_last_four() -> None:
    assert mask_phone("+12025550123") == "+1******0123"
    assert mask_phone("+447911123456") == "+4*******3456"
    assert mask_phone(None) == "-"


class WatchedConsole(ConsoleTransport):
    """The console, noting the thread of each call and the text's row as then committed."""

    def __init__(self, factory: so.sessionmaker[so.Session]) -> None:
        super().__init__(stream=io.StringIO())
        self.factory = factory
        self.calls: list[tuple[str, str, str, bool]] = []

    def send(self, sms: OutgoingSms) -> SendResult:
        with self.factory() as other:  # another connection: only what is committed
            status, handed_at = other.execute(
                sa.select(Message.status, Message.handed_at).where(Message.id == sms.message_id)
            ).one()
        self.calls.append(
            (sms.step, threading.current_thread().name, status, handed_at is not None)
        )
        return super().send(sms)


def test_the_console_is_called_on_the_dispatchers_thread_after_the_guard(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    # Done at 13:30 in New York, dispatched at 16:00: the no-driving text is due.
    result = enroll(completed_at="2026-03-06T13:30")
    console = WatchedConsole(session_factory)
    report = dispatch(session, console, care, clock.now() + timedelta(hours=1))
    assert report.sent == len(console.calls) >= 1
    # No worker thread: the console makes no network call. Each call came only once its
    # guard was committed (`sending`, handed over), as on a worker.
    here = threading.current_thread().name
    assert {(thread, status, handed) for _, thread, status, handed in console.calls} == {
        (here, SENDING, True)
    }
    assert messages(session, result.patient.id)["no-driving"].status == SENT
