"""A create's request must reach Twilio within HANDOVER_MARGIN of the worker's last look
at the clock, or not at all: it fails unsent and is retried.

The (connect, read) timeout pair given to requests bounded each socket connect, not the
time to reach Twilio: urllib3 tries every address the name resolves to, each with the
whole connect timeout, and resolving the name had no timeout at all. api.twilio.com
resolves to several addresses; when some of them drop SYNs (a partial outage, a broken
route), the request reached Twilio 1.5 s per dead address late, past the margin. The
transport now connects within one budget for the lookup and every address (connect.py).

These tests make connection attempts hang the way the existing connect-timeout test does
(a listening socket whose accept queue is full: Linux drops the SYN), and route the fake
Twilio's host name to those addresses first.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import Message
from followup.messaging.retries import HANDOVER_MARGIN
from followup.messaging.transports.base import OutgoingSms, TransientSendError
from followup.messaging.transports.twilio import TwilioTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import FROM_NUMBER
from tests.messaging.helpers import NEW_YORK, at, seed

HOST = "api.twilio.test"  # the fake Twilio's name in these tests


class RunningClock:
    """Business time that moves with real time from `start` (production's SystemClock,
    shifted to the instant a scene needs)."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._m0 = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._m0)


@contextmanager
def unreachable_addresses(count: int) -> Iterator[list[tuple[str, int]]]:
    """`count` local addresses whose connection attempts hang (full accept queues)."""
    servers: list[socket.socket] = []
    fillers: list[socket.socket] = []
    try:
        addresses = []
        for _ in range(count):
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(0)
            servers.append(server)
            port = server.getsockname()[1]
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            addresses.append(("127.0.0.1", port))
        yield addresses
    finally:
        for s in fillers + servers:
            s.close()


def resolve_host_to(
    monkeypatch: pytest.MonkeyPatch, addresses: list[tuple[str, int]], *, lookup: float = 0.0
) -> None:
    """HOST resolves to `addresses`, in that order (as a name with several A records),
    after `lookup` seconds (a slow resolver: getaddrinfo has no timeout)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HOST:
            time.sleep(lookup)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)
                for address in addresses
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def transport_for(fake: FakeTwilio) -> TwilioTransport:
    port = fake.base_url.rsplit(":", 1)[1]
    return TwilioTransport(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=FROM_NUMBER,
        api_base_url=f"http://{HOST}:{port}",
        timeout=2.0,
    )


def fake_address(fake: FakeTwilio) -> tuple[str, int]:
    return ("127.0.0.1", int(fake.base_url.rsplit(":", 1)[1]))


@pytest.mark.parametrize(
    ("dead_addresses", "lookup"),
    [(2, 0.0), (0, 2.5)],
    ids=["two-of-twilios-addresses-drop-syns", "slow-dns-lookup"],
)
def test_a_create_never_reaches_twilio_later_than_the_hand_over_margin(
    monkeypatch: pytest.MonkeyPatch, dead_addresses: int, lookup: float
) -> None:
    """Transport level: two of Twilio's addresses drop SYNs and the third answers, or the
    name takes 2.5 s to resolve. The create is either given up unsent (retried) or reaches
    Twilio within HANDOVER_MARGIN of the call: never seconds later."""
    with FakeTwilio() as fake, unreachable_addresses(dead_addresses) as dead:
        resolve_host_to(monkeypatch, [*dead, fake_address(fake)], lookup=lookup)
        transport = transport_for(fake)
        started = time.time()
        try:
            transport.send(
                OutgoingSms(
                    message_id=1,
                    step="no-driving",
                    to="+12025550143",
                    body="Riverside Spine Center: hello",
                    now=datetime.now(UTC),
                )
            )
        except TransientSendError as exc:
            assert not exc.maybe_sent  # never connected: fine, retried
            return
        finally:
            transport.close()
        [created] = fake.received()
        late = created["received_at"] - started
    assert late < HANDOVER_MARGIN.total_seconds(), (
        f"the create reached Twilio {late:.1f} s after the call began, past the "
        f"{HANDOVER_MARGIN.total_seconds():.0f} s hand-over margin"
    )


@pytest.mark.parametrize("limit", ["quiet hours", "expiry"])
def test_a_text_handed_over_just_before_a_limit_is_not_created_at_twilio_past_it(
    session: so.Session,
    care: CareContext,
    monkeypatch: pytest.MonkeyPatch,
    limit: str,
) -> None:
    """Dispatcher level: the worker's last check passes 2.5 s before 21:00 in New York (or
    before the no-driving text's expiry); two dead addresses of Twilio's then carry the
    request 3 s on, and Twilio creates the text inside quiet hours (or after expiry)."""
    nine_pm = at("2026-03-06T21:00")
    if limit == "quiet hours":
        due, expires = nine_pm - timedelta(hours=1), nine_pm + timedelta(days=1)
        deadline = nine_pm
    else:
        # A zone where it is midday, so only the expiry is near.
        due, expires = nine_pm - timedelta(hours=1), nine_pm
        deadline = expires
    tz = "America/New_York" if limit == "quiet hours" else "Etc/GMT+10"
    [text_id] = seed(session, 1, due=due, expires=expires, tz=tz)
    clock = RunningClock(deadline - timedelta(seconds=2.5))
    with FakeTwilio(now=clock.now) as fake, unreachable_addresses(2) as dead:
        resolve_host_to(monkeypatch, [*dead, fake_address(fake)])
        transport = transport_for(fake)
        try:
            with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
                dispatcher.dispatch(session)
        finally:
            transport.close()
        created = [m["_created"] for m in fake.messages.values()]
    session.expire_all()
    message = session.get(Message, text_id)
    assert message is not None
    late = [c.astimezone(NEW_YORK).isoformat() for c in created if c >= deadline]
    assert not late, (
        f"created at Twilio at {late} ({limit} at {deadline.astimezone(NEW_YORK):%H:%M:%S}); "
        f"recorded {message.status} with sent_at {message.sent_at}"
    )
