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
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

API = "/2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ACCOUNT_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages(?:/(?P<sid>[^/]+))?\.json$"
)
_ACCOUNT_FETCH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)\.json$")
_NUMBERS_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers\.json$")
_SERVICE_PATH = re.compile(r"^/v1/Services/(?P<sid>[^/]+)$")


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
        handler = _KeepAliveHandler if self.keep_alive else _Handler
        server = _Server(("127.0.0.1", self.port), handler)
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
            message["date_updated"] = _rfc2822(self.now())
            if status in ("sent", "delivered", "undelivered", "read") and not message["date_sent"]:
                message["date_sent"] = _rfc2822(self.now())

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
            "date_created": _rfc2822(created),
            "date_sent": _rfc2822(created) if status in ("sent", "delivered") else None,
            "date_updated": _rfc2822(created),
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


def _rfc2822(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC))


def _segments(body: str) -> int:
    if len(body) <= 160:
        return 1
    return -(-len(body) // 153)


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # a benchmark's burst of connections must not be refused

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) before the answer is part of the game.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeTwilio/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing left open

    @property
    def fake(self) -> FakeTwilio:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def handle_one_request(self) -> None:
        self.counted = False
        try:
            super().handle_one_request()
        finally:
            if self.counted:  # a request was read and is now answered (or abandoned)
                with self.fake._lock:
                    self.fake._active -= 1
                    self.fake._created.notify_all()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    # --- plumbing -----------------------------------------------------------------------

    def _record(self) -> tuple[str, dict[str, str], dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        self.received_at = time.time()
        with self.fake._lock:
            self.fake._active += 1
            self.counted = True
            self.fake.requests.append(
                RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=query,
                    form=form,
                    headers=dict(self.headers.items()),
                    received_at=self.received_at,
                )
            )
        return parts.path, query, form

    def _send_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: FakeError) -> None:
        payload: dict[str, Any] = {
            "message": error.message,
            "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
            "status": error.status,
        }
        if error.code is not None:
            payload["code"] = error.code
        headers = {"Retry-After": error.retry_after} if error.retry_after else None
        self._send_json(error.status, payload, headers)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.fake._stopping.wait(seconds)

    def _authorized(self, account: str) -> bool:
        expected = base64.b64encode(
            f"{self.fake.account_sid}:{self.fake.auth_token}".encode()
        ).decode()
        return (
            self.headers.get("Authorization") == f"Basic {expected}"
            and account == self.fake.account_sid
        )

    def _route(self) -> tuple[re.Match[str] | None, dict[str, str], dict[str, str]] | None:
        path, query, form = self._record()
        self._wait(self.fake.latency)
        match = _ACCOUNT_PATH.match(path)
        if match is None:
            self._error(FakeError(20404, 404, "The requested resource was not found"))
            return None
        if not self._authorized(match["account"]):
            self._error(FakeError(20003, 401, "Authenticate"))
            return None
        with self.fake._lock:
            if self.fake.fail_next > 0:
                self.fake.fail_next -= 1
                failing = True
            else:
                failing = False
        if failing:
            self._error(FakeError(20500, 500, "Internal Server Error"))
            return None
        return match, query, form

    # --- verbs --------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        routed = self._route()
        if routed is None:
            return
        match, _query, form = routed
        assert match is not None
        if match["sid"] is not None:
            self._error(FakeError(20404, 404, "Updating messages is not faked"))
            return
        to = form.get("To", "")
        if not to:
            self._error(FakeError(21604, 400, "A 'To' phone number is required."))
            return
        if not E164.match(to):
            self._error(FakeError(21211, 400, f"The 'To' number {to} is not a valid phone number."))
            return
        if not (form.get("From") or form.get("MessagingServiceSid")):
            self._error(FakeError(21603, 400, "A 'From' phone number is required."))
            return
        if not form.get("Body"):
            self._error(FakeError(21602, 400, "Message body is required."))
            return
        fake = self.fake
        with fake._lock:
            error = fake.errors.get(to)
            down = fake.creates_down_until
            if error is None and down is not None and fake.now() < down:
                error = FakeError(20503, 503, "Service Unavailable", fake.down_retry_after)
            if error is None and fake.throttle_next > 0:
                fake.throttle_next -= 1
                error = FakeError(20429, 429, "Too Many Requests", fake.down_retry_after)
            if error is not None:
                drop = fail = False
            else:
                message = fake._store(
                    form,
                    created=fake.now(),
                    status="queued",
                    direction="outbound-api",
                    received=self.received_at,
                )
                drop = fake.drop_after_accept > 0
                fail = not drop and fake.fail_after_accept > 0
                if drop:
                    fake.drop_after_accept -= 1
                elif fail:
                    fake.fail_after_accept -= 1
        if error is not None:
            self._error(error)
            return
        if drop:
            # Created, then the connection dies before any answer: the client cannot know.
            self.close_connection = True
            return
        if fail:
            self._error(FakeError(20500, 500, "Internal Server Error"))
            return
        if fake.on_create is not None:
            fake.on_create(_public(message))
        self._wait(fake.latency_after_accept)
        self._send_json(201, _public(message))

    def _basic_auth_ok(self) -> bool:
        expected = base64.b64encode(
            f"{self.fake.account_sid}:{self.fake.auth_token}".encode()
        ).decode()
        return self.headers.get("Authorization") == f"Basic {expected}"

    def _read_only(self) -> bool:
        """Answer the account, number and service look-ups; False for anything else."""
        parts = urlsplit(self.path)
        path = parts.path
        matches = [
            (kind, pattern.match(path))
            for kind, pattern in (
                ("account", _ACCOUNT_FETCH),
                ("numbers", _NUMBERS_PATH),
                ("service", _SERVICE_PATH),
            )
        ]
        kind, match = next(((k, m) for k, m in matches if m is not None), ("", None))
        if match is None:
            return False
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        fake = self.fake
        with fake._lock:
            fake.requests.append(
                RecordedRequest(
                    method="GET", path=path, query=query, form={}, headers=dict(self.headers)
                )
            )
        self._wait(fake.latency)
        account = match.groupdict().get("account", fake.account_sid)
        if not self._basic_auth_ok() or account != fake.account_sid:
            self._error(FakeError(20003, 401, "Authenticate"))
            return True
        with fake._lock:
            failing = fake.fail_next > 0
            fake.fail_next -= 1 if failing else 0
        if failing:
            self._error(FakeError(20500, 500, "Internal Server Error"))
            return True
        if kind == "account":
            self._send_json(
                200,
                {
                    "sid": fake.account_sid,
                    "friendly_name": "Fake clinic account",
                    "status": fake.account_status,
                    "type": "Full",
                    "owner_account_sid": fake.account_sid,
                    "uri": f"{API}/Accounts/{fake.account_sid}.json",
                },
            )
        elif kind == "numbers":
            wanted = query.get("PhoneNumber")
            found = [
                {
                    "sid": "PN" + format(index, "032x"),
                    "account_sid": fake.account_sid,
                    "phone_number": number,
                    "capabilities": {"sms": True, "mms": False, "voice": True},
                    "sms_url": sms_url,
                    "sms_method": "POST",
                    "status": "in-use",
                }
                for index, (number, sms_url) in enumerate(fake.numbers.items())
                if wanted is None or number == wanted
            ]
            size = int(query.get("PageSize") or 50)
            uri = f"{path}?{urlencode(query)}"
            self._send_json(
                200,
                {
                    "incoming_phone_numbers": found[:size],
                    "end": max(min(len(found), size) - 1, 0),
                    "first_page_uri": uri,
                    "next_page_uri": None,
                    "previous_page_uri": None,
                    "page": 0,
                    "page_size": size,
                    "start": 0,
                    "uri": uri,
                },
            )
        else:
            sid = match["sid"]
            if sid not in fake.messaging_services:
                self._error(FakeError(20404, 404, "The requested resource was not found"))
            else:
                self._send_json(
                    200,
                    {
                        "sid": sid,
                        "account_sid": fake.account_sid,
                        "friendly_name": "Fake clinic service",
                        "inbound_request_url": fake.messaging_services[sid],
                        "inbound_method": "POST",
                        "use_inbound_webhook_on_number": False,
                        "url": f"https://messaging.twilio.com/v1/Services/{sid}",
                    },
                )
        return True

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/_fake/received.json":  # for a benchmark in another process
            self._record()
            self._send_json(200, self.fake.received())
            return
        if self._read_only():
            return
        routed = self._route()
        if routed is None:
            return
        match, query, _form = routed
        assert match is not None
        fake = self.fake
        if match["sid"] is not None:
            with fake._lock:
                message = fake.messages.get(match["sid"])
            if message is None:
                self._error(FakeError(20404, 404, "The requested resource was not found"))
            else:
                self._send_json(200, _public(message))
            return
        with fake._lock:
            found = [m for m in fake.messages.values() if _matches(m, query)]
        found.sort(key=lambda m: m["_created"], reverse=True)  # newest first, as Twilio lists
        size = min(int(query.get("PageSize") or 50), 1000)
        page = int(query.get("Page") or 0)
        with fake._lock:
            fault = fake.list_faults.get(query.get("To", ""), {}).get(page)
        if fault is not None and self._list_fault(fault):
            return
        chunk = found[page * size : (page + 1) * size]
        path = match.group(0)
        base = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(number: int) -> str:
            params = {**base, "PageSize": str(size), "Page": str(number)}
            if number:
                params["PageToken"] = f"PA{number}"
            return f"{path}?{urlencode(params)}"

        more = (page + 1) * size < len(found)
        self._send_json(
            200,
            {
                "messages": [_public(m) for m in chunk],
                "end": page * size + max(len(chunk) - 1, 0),
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if more else None,
                "previous_page_uri": page_uri(page - 1) if page else None,
                "page": page,
                "page_size": size,
                "start": page * size,
                "uri": page_uri(page),
            },
        )

    def _list_fault(self, fault: ListFault) -> bool:
        """Answer a list request as `fault` says; False when it is only a delay."""
        if isinstance(fault, FakeError):
            self._error(fault)
        elif fault == DROP:
            self.close_connection = True
        elif fault in (TRUNCATED, NO_RECORDS):
            whole = {"messages": [], "next_page_uri": None, "page": 0, "page_size": 50}
            if fault == NO_RECORDS:
                del whole["messages"]
            data = json.dumps(whole).encode("utf-8")
            if fault == TRUNCATED:
                data = data[: len(data) // 2]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._wait(float(fault))
            return False
        return True


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # persistent connections, as api.twilio.com
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart


def _matches(message: dict[str, Any], query: dict[str, str]) -> bool:
    if "To" in query and message["to"] != query["To"]:
        return False
    if "From" in query and message["from"] != query["From"]:
        return False
    # DateSent filters compare the sent date (day granularity); unsent messages never match.
    for name, accept in (
        ("DateSent", lambda day, ref: day == ref),
        ("DateSent<", lambda day, ref: day <= ref),
        ("DateSent>", lambda day, ref: day >= ref),
    ):
        if name in query:
            if not message["date_sent"]:
                return False
            sent = datetime.strptime(message["date_sent"], "%a, %d %b %Y %H:%M:%S %z")
            if not accept(sent.date().isoformat(), query[name][:10]):
                return False
    return True


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
