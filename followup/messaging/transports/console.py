"""The console transport: the embedded default. Prints a masked line; optionally a JSON file."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from followup.care import gsm
from followup.messaging.transports.base import OutgoingSms, SendResult, mask_phone


class ConsoleTransport:
    """Write texts to the terminal (masked) and, when asked, one JSON line each to a file."""

    name = "console"
    # No network call: the dispatcher hands texts over on its own thread, not on workers.
    in_process = True

    def __init__(self, *, stream: TextIO | None = None, file_path: str | None = None) -> None:
        self._stream = stream
        self._file_path = Path(file_path) if file_path else None
        self._lock = threading.Lock()

    def send(self, sms: OutgoingSms) -> SendResult:
        sid = f"console-{uuid.uuid4().hex}"
        segments = gsm.segment_count(sms.body)
        line = (
            f"[sms console] message={sms.message_id} step={sms.step} "
            f"to={mask_phone(sms.to)} segments={segments}"
        )
        with self._lock:
            stream = self._stream or sys.stdout
            stream.write(line + "\n")
            stream.flush()
            if self._file_path is not None:
                record = {
                    "message_id": sms.message_id,
                    "step": sms.step,
                    "to": sms.to,
                    "body": sms.body,
                    "sent_at": sms.now.astimezone(UTC).isoformat(),
                }
                with self._file_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return SendResult(provider_sid=sid, provider_status="sent", segments=segments)

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        raise NotImplementedError("the console keeps no record to ask")
