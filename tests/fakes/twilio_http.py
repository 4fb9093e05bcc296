"""The fake Twilio's HTTP side: the server and the handler that answers the official client's
requests from a FakeTwilio's state and switches (twilio_server.py), paths, paging, errors
and the faults it is told to produce."""

from __future__ import annotations

import base64
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fakes.twilio_server import (
    API,
    DROP,
    E164,
    NO_RECORDS,
    TRUNCATED,
    FakeError,
    ListFault,
    RecordedRequest,
    public_json,
)

if TYPE_CHECKING:
    from tests.fakes.twilio_server import FakeTwilio

_ACCOUNT_PATH = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages(?:/(?P<sid>[^/]+))?\.json$"
)
_ACCOUNT_FETCH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)\.json$")
_NUMBERS_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers\.json$")
_SERVICE_PATH = re.compile(r"^/v1/Services/(?P<sid>[^/]+)$")


class Server(ThreadingHTTPServer):
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


class Handler(BaseHTTPRequestHandler):
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

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header: the fake's own clock (the test's), as Twilio's is its own."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return format_datetime(self.fake.now().astimezone(UTC), usegmt=True)

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
            fake.on_create(public_json(message))
        self._wait(fake.latency_after_accept)
        self._send_json(201, public_json(message))

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
                self._send_json(200, public_json(message))
            return
        with fake._lock:
            found = [m for m in fake.messages.values() if matches(m, query)]
        found.sort(key=_list_key(fake.list_order), reverse=True)  # newest first
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
                "messages": [public_json(m) for m in chunk],
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


class KeepAliveHandler(Handler):
    protocol_version = "HTTP/1.1"  # persistent connections, as api.twilio.com
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart


def matches(message: dict[str, Any], query: dict[str, str]) -> bool:
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
            sent = parsedate_to_datetime(message["date_sent"])
            if not accept(sent.date().isoformat(), query[name][:10]):
                return False
    return True


def _list_key(order: str) -> Callable[[dict[str, Any]], tuple[bool, datetime]]:
    """The sort key of a list request's order (FakeTwilio.list_order), newest last."""
    if order == "created":
        return lambda m: (False, m["_created"])
    if order == "sent":  # unsent ones sort as newest
        return lambda m: (
            not m["date_sent"],
            parsedate_to_datetime(m["date_sent"]) if m["date_sent"] else m["_created"],
        )
    if order == "sent-unsent-last":  # DESC with NULLs last (MySQL's default): unsent oldest
        return lambda m: (
            bool(m["date_sent"]),
            parsedate_to_datetime(m["date_sent"]) if m["date_sent"] else m["_created"],
        )
    raise ValueError(f"list_order: {order!r} is neither 'created', 'sent' nor 'sent-unsent-last'")
