import io
import json
from datetime import UTC, datetime
from pathlib import Path

from followup.messaging.transports.base import OutgoingSms, mask_phone
from followup.messaging.transports.console import ConsoleTransport


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
