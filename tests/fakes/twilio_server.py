"""A fake Twilio: a real HTTP server on 127.0.0.1 speaking the Messages resource.

Enough of /2010-04-01/Accounts/{AccountSid}/Messages.json for the official client: create
(form POST), list (GET, filtered by To, From and DateSent, paged) and fetch
(GET Messages/{Sid}.json), with HTTP Basic auth and Twilio's error body
{code, message, more_info, status}. For `followup check`'s read-only calls it also answers
GET Accounts/{Sid}.json (the account and its status), GET
Accounts/{Sid}/IncomingPhoneNumbers.json?PhoneNumber= (the account's numbers, each with
its incoming-message webhook) and GET /v1/Services/{Sid} (Messaging Services, which the
client asks of messaging.twilio.com: the routed client sends those here too). It records every request and has switches for the
failures a real network and a real Twilio produce: an error code per recipient, latency,
a run of 500s, an outage of creates until a given instant, a 500 after the message was
created, a dropped connection after the message was created, and list requests for a
recipient that fail (an error, a broken page, a dropped connection, a delay) on a given
page. Times come from `now`
(the test's FakeClock), so reconciliation by creation time works with frozen test time;
each request also keeps its real receive time (`received_at`, epoch seconds), against
which the benchmarks measure how late a text reached "Twilio".

`keep_alive=True` answers HTTP/1.1 and keeps connections open, as api.twilio.com does
(the benchmarks use it); the default closes each connection after one answer.

This module holds the fake's state, switches and lifecycle; twilio_http.py the HTTP server
and the handler that answers from them.
"""

from __future__ import annotations

import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import ThreadingHTTPServer
from typing import Any

API = "/2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class FakeError:
    """An error answer: Twilio's code (None leaves it out) and the HTTP status."""

    code: int | None
    status: int = 400
    message: str = "error"
    retry_after: str | None = None


TRUNCATED = "truncated"  # a list page cut off mid-JSON
NO_RECORDS = "no-records"  # a list page with paging keys but no `messages`
DROP = "drop"  # the connection closes before any answer
ListFault = FakeError | str | float


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    received_at: float = 0.0  # time.time() when the request arrived


@dataclass
class FakeTwilio:
    account_sid: str = "AC" + "f" * 32
    auth_token: str = "fake-auth-token-0123456789abcdef"
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    port: int = 0  # 0: any free port
    account_status: str = "active"  # or suspended, closed
    # The account's numbers: E.164 -> its "A message comes in" webhook URL (None: unset).
    numbers: dict[str, str | None] = field(default_factory=lambda: {"+12025550199": None})
    # The account's Messaging Services: MG... -> their incoming-message webhook URL.
    messaging_services: dict[str, str | None] = field(default_factory=dict)
    keep_alive: bool = False  # HTTP/1.1 with persistent connections, as Twilio

    # --- switches (set them between requests) -------------------------------------------
    errors: dict[str, FakeError] = field(default_factory=dict)  # by recipient (To)
    latency: float = 0.0  # seconds before answering any request
    latency_after_accept: float = 0.0  # seconds after creating, before answering a create
    fail_next: int = 0  # the next N requests get a 500 and change nothing
    fail_after_accept: int = 0  # the next N creates are stored, then answered with a 500
    drop_after_accept: int = 0  # the next N creates are stored, then the socket is closed
    # Creates are answered 503 (and nothing is stored) until `now()` reaches this instant.
    creates_down_until: datetime | None = None
    throttle_next: int = 0  # the next N creates are answered 429 (20429) and change nothing
    down_retry_after: str | None = None  # Retry-After sent with those 503s
    # Called with each created message (its public JSON) before the create is answered, as
    # when Twilio's status callback overtakes its answer to the create.
    on_create: Callable[[dict[str, Any]], None] | None = None
    # List requests (GET Messages.json) answered otherwise, by recipient (To) and then by
    # page index (0: the first page), for as long as the entry stays: a FakeError (429 with
    # or without Retry-After, 5xx, 401, 403, 404), TRUNCATED (a 200 whose JSON is cut off),
    # NO_RECORDS (a 200 page without its `messages` key), DROP (the connection closes
    # with no answer) or a number (seconds to wait before answering: a client timeout).
    list_faults: dict[str, dict[int, ListFault]] = field(default_factory=dict)
    # How list requests order messages, newest first: by creation ("created") or, since
    # Twilio's documentation does not say which, by DateSent ("sent": unsent ones first;
    # "sent-unsent-last": unsent ones after every sent one, as DESC puts NULLs in MySQL).
    list_order: str = "created"

    # --- what happened ------------------------------------------------------------------
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # by SID, in order

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._created = threading.Condition(self._lock)
        self._active = 0  # requests being handled now
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeTwilio:
        from tests.fakes.twilio_http import Handler, KeepAliveHandler, Server

        handler = KeepAliveHandler if self.keep_alive else Handler
        server = Server(("127.0.0.1", self.port), handler)
        server.daemon_threads = False  # server_close() joins the request threads
        server.block_on_close = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-twilio"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()  # idle keep-alive connections end now
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- helpers for tests --------------------------------------------------------------

    def creates(self) -> list[dict[str, str]]:
        """The form of every create request received (accepted or not)."""
        with self._lock:
            return [r.form for r in self.requests if r.method == "POST"]

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Wait until `count` messages exist (created by requests), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._created:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._created.wait(left)
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled (a dead client's request finishes here)."""
        deadline = time.monotonic() + timeout
        with self._created:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._created.wait(left)
            return True

    def received(self) -> list[dict[str, Any]]:
        """Every message created by a request: its SID, To, Body and real receive time."""
        with self._lock:
            return [
                {"sid": m["sid"], "to": m["to"], "body": m["body"], "received_at": m["_received"]}
                for m in self.messages.values()
                if m["_received"] is not None
            ]

    def add_message(
        self,
        *,
        to: str,
        body: str,
        from_: str = "+12025550199",
        created: datetime | None = None,
        status: str = "delivered",
        direction: str = "outbound-api",
    ) -> dict[str, Any]:
        """Put a message at the fake as if it had been created earlier."""
        with self._lock:
            return self._store(
                {"To": to, "Body": body, "From": from_},
                created=created or self.now(),
                status=status,
                direction=direction,
                received=None,
            )

    def set_status(self, sid: str, status: str, *, error_code: int | None = None) -> None:
        """Move a message on, as the carrier would."""
        with self._lock:
            message = self.messages[sid]
            message["status"] = status
            message["error_code"] = error_code
            message["date_updated"] = rfc2822(self.now())
            if status in ("sent", "delivered", "undelivered", "read") and not message["date_sent"]:
                message["date_sent"] = rfc2822(self.now())

    # --- the resource -------------------------------------------------------------------

    def _store(
        self,
        form: dict[str, str],
        *,
        created: datetime,
        status: str,
        direction: str,
        received: float | None,
    ) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        body = form.get("Body", "")
        uri = f"{API}/Accounts/{self.account_sid}/Messages/{sid}.json"
        message = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": rfc2822(created),
            "date_sent": rfc2822(created) if status in ("sent", "delivered") else None,
            "date_updated": rfc2822(created),
            "direction": direction,
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form.get("To"),
            "uri": uri,
            "_created": created,
            "_received": received,
        }
        self.messages[sid] = message
        self._created.notify_all()
        return message


def rfc2822(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC))


def _segments(body: str) -> int:
    if len(body) <= 160:
        return 1
    return -(-len(body) // 153)


def public_json(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def main() -> None:
    """Run the fake on its own, for trying `followup` by hand (see docs/twilio.md)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="A fake Twilio Messages API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--keep-alive", action="store_true", help="HTTP/1.1 persistent connections")
    parser.add_argument("--quiet", action="store_true", help="do not print each message")
    args = parser.parse_args()
    fake = FakeTwilio(port=args.port, latency=args.latency, keep_alive=args.keep_alive).start()
    sys.stdout.write(
        f"fake Twilio at {fake.base_url}\n"
        f"TWILIO_API_BASE_URL={fake.base_url}\n"
        f"TWILIO_ACCOUNT_SID={fake.account_sid}\n"
        f"TWILIO_AUTH_TOKEN={fake.auth_token}\n"
        "Ctrl-C stops it.\n"
    )
    sys.stdout.flush()
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            with fake._lock:
                created = list(fake.messages.values())[seen:]
            for message in [] if args.quiet else created:
                sys.stdout.write(
                    f"created {message['sid']} to ...{str(message['to'])[-4:]}: "
                    f"{len(message['body'])} characters, {message['num_segments']} segment(s)\n"
                )
            seen += len(created)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
