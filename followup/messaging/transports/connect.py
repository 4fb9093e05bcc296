"""Connecting to Twilio within one deadline: the name's lookup and every address together.

urllib3 gives each address a name resolves to the whole connect timeout, one after another,
and looks the name up with no timeout at all: with two of Twilio's addresses dropping
connection attempts, or a lookup that takes 2.5 s, a create reached Twilio about 3 s after
the dispatcher's last look at the clock, past the 2 s it keeps before a text's expiry and
before quiet hours. Here the connect timeout is one budget for the lookup and all the
attempts: spent, the request fails unsent (requests' ConnectTimeout: retried, never
"maybe sent"). The requests session mounts `DeadlineAdapter` for http and https.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

AddressInfo = list[tuple[Any, ...]]


def lookup_within(host: str, port: int, seconds: float) -> AddressInfo:
    """`socket.getaddrinfo` for a stream socket, or TimeoutError after `seconds`.

    The lookup cannot be cancelled: it runs on a daemon thread that finishes on its own
    (the resolver's own timeouts) while the caller has already given up."""
    answer: dict[str, Any] = {}
    done = threading.Event()

    def look() -> None:
        try:
            family = allowed_gai_family()
            answer["infos"] = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            answer["error"] = exc
        finally:
            done.set()

    threading.Thread(target=look, name="twilio-lookup", daemon=True).start()
    if not done.wait(max(seconds, 0.0)):
        raise TimeoutError(f"looking up {host} took over {seconds:.1f} s")
    if "error" in answer:
        raise answer["error"]
    infos: AddressInfo = answer["infos"]
    return infos


def connect_within(
    address: tuple[str, int],
    seconds: float,
    *,
    source_address: tuple[str, int] | None = None,
    socket_options: Any = None,
) -> socket.socket:
    """A socket connected to `address` within `seconds` in all (lookup included), trying
    its addresses in order while time is left; TimeoutError once it is spent."""
    deadline = time.monotonic() + seconds
    host, port = address
    infos = lookup_within(host.strip("[]"), port, seconds)
    error: OSError | None = None
    for family, kind, proto, _name, where in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(left)
            if source_address:
                sock.bind(source_address)
            sock.connect(where)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        # What is left of the budget bounds each step of the TLS handshake that follows.
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        return sock
    if error is not None and time.monotonic() < deadline:
        raise error
    raise TimeoutError(f"no address of {host} answered within {seconds:.1f} s")


class _Deadline:
    """urllib3's `_new_conn`, with the connect timeout as one budget (`connect_within`)."""

    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        seconds = self.timeout if isinstance(self.timeout, int | float) else 10.0
        try:
            return connect_within(
                (self._dns_host, self.port),
                float(seconds),
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out ({exc}; budget {seconds} s)"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(
                self,  # type: ignore[arg-type]
                f"Failed to establish a new connection: {exc}",
            ) from exc


class DeadlineHTTPConnection(_Deadline, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_Deadline, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose direct connections keep `connect_within`'s one deadline
    (a proxy, if one is configured, is connected to as urllib3 does)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
